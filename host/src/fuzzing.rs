//! Entry points for the fuzz targets in `host/fuzz` (built only with `--cfg fuzzing`, which
//! `cargo fuzz` sets): each takes arbitrary bytes, as an attacker can send them, and must
//! neither panic nor allocate without bound.

use std::sync::OnceLock;

use bytes::BytesMut;

use crate::model::Protocol;
use crate::postgres::auth::{ScramSecret, ScramServer};
use crate::postgres::protocol::{
    BackendMessage, FrontendMessage, SqlText, Startup, split_message, split_startup,
};

/// The largest message the frontend accepts after login (as `frontend::postgres` configures).
const MAX_MESSAGE: usize = 1 << 20;

/// A client's byte stream: the startup packet, then tagged messages, each decoded.
pub fn postgres_frontend(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(body)) = split_startup(&mut buf) {
        let _ = Startup::decode(&body);
    }
    while let Ok(Some(msg)) = split_message(&mut buf, MAX_MESSAGE) {
        if let Ok(FrontendMessage::Query { sql }) = FrontendMessage::decode(&msg) {
            let _ = SqlText::from_bytes(sql.as_bytes());
        }
    }
}

/// A server's byte stream (a compromised or broken backend), each message decoded.
pub fn postgres_backend(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = split_message(&mut buf, MAX_MESSAGE) {
        let _ = BackendMessage::decode(&msg);
        let _ = crate::postgres::protocol::backend::error_code(&msg);
        let _ = crate::postgres::protocol::backend::ready_status(&msg);
    }
}

/// The SCRAM exchange as a client drives it before it is authenticated: `data` split in two at
/// its first 0xFF byte is the client-first and the client-final message.
pub fn postgres_scram(data: &[u8]) {
    static SECRET: OnceLock<Option<ScramSecret>> = OnceLock::new();
    // One iteration: the exchange's parsing is what is fuzzed, not PBKDF2.
    let Some(secret) = SECRET
        .get_or_init(|| ScramSecret::from_password(b"pencil", b"salt-salt-salt-1", 1).ok())
        .clone()
    else {
        return;
    };
    let (first, last) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut server = ScramServer::new(secret);
    if server.client_first("SCRAM-SHA-256", first).is_ok() {
        let _ = server.client_final(last);
    }
}

/// The classifier (and the statement facts policies judge) in every dialect.
pub fn classify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for protocol in [
        Protocol::Postgres,
        Protocol::ClickhouseHttp,
        Protocol::Mysql,
    ] {
        let _ = crate::classify::classify(protocol, &text);
        let _ = crate::classify::statement_texts(protocol, &text);
    }
}

/// The ClickHouse HTTP frontend's own request decoding: `data` split at its first 0xFF byte is
/// the URL query string and the body.
pub fn clickhouse_request(data: &[u8]) {
    let (query, body) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    crate::frontend::clickhouse_http::fuzz_request(&String::from_utf8_lossy(query), body);
}

/// Cache values and invalidation messages as Redis (which anyone with access can write) returns
/// them.
pub fn cache_codecs(data: &[u8]) {
    crate::cache::fuzz_redis_codecs(data);
}

/// The configuration file parser and its validation.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::config::Config::parse_with_env(&text, &|_| None);
}

/// Every fuzz target on its committed corpus (`host/fuzz/corpus/<target>/`: seeds, and inputs
/// that once failed, kept as regression tests), without the fuzzer.
#[cfg(test)]
mod tests {
    use std::path::Path;

    type Target = fn(&[u8]);

    const TARGETS: &[(&str, Target)] = &[
        ("postgres_frontend", super::postgres_frontend),
        ("postgres_backend", super::postgres_backend),
        ("postgres_scram", super::postgres_scram),
        ("classify", super::classify),
        ("clickhouse_request", super::clickhouse_request),
        ("cache_codecs", super::cache_codecs),
        ("config", super::config),
    ];

    #[test]
    fn corpora_replay_without_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut inputs = 0;
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("a corpus file");
                target(&data);
                inputs += 1;
            }
            assert!(inputs > 0, "no corpus for {name}");
        }
    }

    /// A short, deterministic smoke run of every target between full fuzzing runs: each corpus
    /// input mutated the ways a fuzzer starts with (bytes flipped, inserted, removed, a chunk
    /// repeated, the input cut, a length field set to an extreme).
    #[test]
    fn mutated_corpora_do_not_panic() {
        const MUTATIONS_PER_INPUT: usize = 512;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut rng = XorShift(0x5EED_CAFE_F00D_D00D);
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries.flatten() {
                let seed = std::fs::read(entry.path()).expect("a corpus file");
                let mut data = seed.clone();
                for round in 0..MUTATIONS_PER_INPUT {
                    // Every few rounds, start again from the seed so mutations stay near it.
                    if round % 8 == 0 {
                        data.clone_from(&seed);
                    }
                    mutate(&mut data, &mut rng);
                    target(&data);
                }
            }
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `n` (`n > 0`).
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    fn mutate(data: &mut Vec<u8>, rng: &mut XorShift) {
        let at = |rng: &mut XorShift, len: usize| rng.below(len.max(1));
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = at(rng, data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = at(rng, data.len() + 1).min(data.len());
                data.insert(i, rng.next() as u8);
            }
            2 if !data.is_empty() => {
                let i = at(rng, data.len());
                data.remove(i);
            }
            3 if !data.is_empty() && data.len() < 1 << 16 => {
                let start = at(rng, data.len());
                let end = (start + 1 + rng.below(32)).min(data.len());
                let chunk = data[start..end].to_vec();
                let i = at(rng, data.len() + 1).min(data.len());
                data.splice(i..i, chunk);
            }
            4 => {
                let keep = at(rng, data.len() + 1);
                data.truncate(keep);
            }
            _ if data.len() >= 4 => {
                let i = at(rng, data.len() - 3);
                let extreme: [u32; 4] = [0, 4, 0x7fff_ffff, 0xffff_ffff];
                data[i..i + 4].copy_from_slice(&extreme[rng.below(4)].to_be_bytes());
            }
            _ => data.push(rng.next() as u8),
        }
    }
}
