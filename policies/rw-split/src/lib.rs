//! `rw-split`: Switchyard's built-in default policy as a module.
//!
//! Reads outside a transaction go to the replica pool (volatile reads too: they are still
//! reads); everything else — writes, DDL, transaction control, session and utility statements,
//! statements the host could not parse, anything inside a transaction — goes to the primary.
//! Nothing is cached. It takes no configuration (keys are ignored).

use switchyard_policy::{Config, Decision, Policy, Query};

pub struct RwSplit;

impl Policy for RwSplit {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(RwSplit)
    }

    fn on_query(&self, q: &Query) -> Decision {
        Decision::forward().read_write_split(q)
    }
}

switchyard_policy::export!(RwSplit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy::testing::init;
    use switchyard_policy::{Action, QueryFlags, Route, StatementKind as K};

    fn route(q: Query) -> Route {
        let d = init::<RwSplit>(&[]).on_query(&q);
        assert_eq!(d.action, Action::Forward);
        assert_eq!(d.cache, None);
        assert!(d.tags.is_empty() && d.affinity_key.is_none() && d.mirror.is_none());
        d.route
    }

    #[test]
    fn reads_go_to_the_replica() {
        assert_eq!(route(Query::new("SELECT 1", K::Read)), Route::Replica);
        let volatile = Query::new("SELECT now()", K::Read).with_flags(QueryFlags::VOLATILE);
        assert_eq!(route(volatile), Route::Replica);
    }

    #[test]
    fn everything_else_goes_to_the_primary() {
        for kind in [
            K::Write,
            K::Ddl,
            K::Transaction,
            K::Session,
            K::Utility,
            K::Unknown,
        ] {
            assert_eq!(route(Query::new("x", kind)), Route::Primary, "{kind:?}");
        }
    }

    #[test]
    fn reads_in_a_transaction_go_to_the_primary() {
        let q = Query::new("SELECT 1", K::Read).inside_transaction();
        assert_eq!(route(q), Route::Primary);
    }

    #[test]
    fn config_is_ignored() {
        assert!(RwSplit::init(Config::from_pairs([("anything", "x")])).is_ok());
    }
}
