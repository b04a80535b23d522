//! A fresh PostgreSQL database per test on the machine's server
//! (`PADDOCK_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped when the handle is dropped.

use sqlx::Connection;

pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

fn admin_url() -> String {
    std::env::var("PADDOCK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl PostgresDatabase {
    /// Creates `paddock_test_<random>` and returns its handle.
    pub async fn create() -> anyhow::Result<PostgresDatabase> {
        let admin_url = admin_url();
        let name = format!("paddock_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| {
            anyhow::anyhow!("PostgreSQL at {admin_url} (set PADDOCK_TEST_POSTGRES): {e}")
        })?;
        // The name is generated here from a UUID, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_string())
            .unwrap_or(admin_url.clone());
        let url = format!("{base}/{name}");
        Ok(PostgresDatabase {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
