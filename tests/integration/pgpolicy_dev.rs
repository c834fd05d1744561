#[path = "postgres_policy.rs"]
mod postgres_policy;
