//! Causal positions shared between proxy instances: a client that names a key
//! (`switchyard.causal_key`) has the WAL position of its last write kept in Redis under
//! `<p>:pos:<name>`, so its reads through another instance see that write too. The value is the
//! position as 16 hex digits, so Redis compares positions as strings; a store only ever raises
//! it (two instances writing for one key keep the later position).

use std::time::Duration;

use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::Value;

use super::{RedisTier, millis};
use crate::cache::CacheError;

/// Raises the stored position to ARGV[1] (never lowers it) and renews its TTL (ARGV[2], ms).
const RAISE_SCRIPT: &str = "\
local current = redis.call('get', KEYS[1])
if not current or current < ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return 1";

impl RedisTier {
    /// Raises `name`'s position to `position`, kept for `ttl` after the last raise.
    pub(crate) async fn raise_position(
        &self,
        name: &str,
        position: u64,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let args: Vec<Value> = vec![
            Value::from(format!("{position:016x}")),
            Value::Integer(millis(ttl)),
        ];
        let eval = self
            .cmd
            .eval::<i64, _, _, _>(RAISE_SCRIPT, vec![self.position_key(name)], args);
        self.run("EVAL raise position", eval).await.map(|_| ())
    }

    /// The position stored for `name` (`None`: none, or expired).
    pub(crate) async fn position(&self, name: &str) -> Result<Option<u64>, CacheError> {
        let get = self.cmd.get::<Option<String>, _>(self.position_key(name));
        match self.run("GET position", get).await? {
            None => Ok(None),
            Some(hex) => u64::from_str_radix(&hex, 16)
                .map(Some)
                .map_err(|_| CacheError::Corrupt("a causal position is not hexadecimal")),
        }
    }

    fn position_key(&self, name: &str) -> String {
        format!("{}:pos:{name}", self.prefix)
    }
}
