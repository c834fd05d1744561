//! What a client is told once logged in: the server's startup parameters (learnt once from a
//! real server connection) with the client's own settings on top.

use super::super::PgFrontend;
use super::super::users::User;

impl PgFrontend {
    /// What the client is told about the server: the real server's startup parameters (learnt
    /// from the first server connection), with the client's own settings on top.
    pub(super) async fn parameter_statuses(
        &self,
        user: &User,
        database: &str,
        client: &[(String, String)],
    ) -> Vec<(String, String)> {
        let server = self
            .server_params
            .get_or_init(|| async {
                match self.learn_server_params(user, database).await {
                    Some(p) => p,
                    None => default_params(),
                }
            })
            .await;
        let mut out: Vec<(String, String)> = server.clone();
        for (name, value) in client {
            let known = out.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name));
            match known {
                Some((_, v)) => *v = value.clone(),
                None if name == "application_name" => out.push((name.clone(), value.clone())),
                None => {}
            }
        }
        if let Some((_, v)) = out.iter_mut().find(|(k, _)| k == "session_authorization") {
            *v = user.config.name.clone();
        }
        out
    }

    async fn learn_server_params(
        &self,
        user: &User,
        database: &str,
    ) -> Option<Vec<(String, String)>> {
        let router = self.backend.router();
        let pool = router
            .resolve(
                &crate::model::Route::Primary,
                crate::model::StatementKind::Read,
                false,
            )
            .ok()?;
        let credentials = user.config.backend_credentials(pool.config());
        let login = crate::backend::postgres::Login {
            user: credentials.user,
            password: credentials.password.map(|p| p.expose().to_owned()),
            database: database.to_owned(),
        };
        let mut conn = self
            .backend
            .checkout(
                &pool,
                None,
                &login,
                &[],
                &crate::limits::Tenant::internal(),
                &mut crate::backend::postgres::BucketMemo::default(),
            )
            .await
            .ok()?;
        let params = conn
            .conn()
            .params
            .iter()
            .filter(|(k, _)| k != "application_name")
            .cloned()
            .collect();
        conn.release();
        Some(params)
    }
}

fn default_params() -> Vec<(String, String)> {
    [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
