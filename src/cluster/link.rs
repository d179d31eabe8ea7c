//! One connection to Redis that comes back by itself: every call is bounded by a timeout, and
//! a call that fails for any reason but Redis's own answer drops the connection, so the next
//! call dials again.
//!
//! Every call made through a link must be safe to repeat: a call whose answer was lost may
//! have been carried out.

use std::future::Future;
use std::io;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline};
use redis::{RedisError, RedisResult, ScriptInvocation};

use super::Clock;

/// A lazily (re)connected multiplexed connection.
pub(crate) struct Link {
    client: Client,
    clock: Clock,
    config: AsyncConnectionConfig,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl Link {
    /// Calls through this link take at most `timeout` each, dialing included.
    pub(crate) fn new(client: Client, clock: Clock, timeout: Duration) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Link {
            client,
            clock,
            config,
            timeout,
            conn: None,
        }
    }

    /// The last call did not fail for want of Redis.
    pub(crate) fn connected(&self) -> bool {
        self.conn.is_some()
    }

    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        self.call(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    pub(crate) async fn pipe<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        self.call(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    pub(crate) async fn invoke<T: FromRedisValue>(
        &mut self,
        script: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        self.call(|mut conn| async move { script.invoke_async(&mut conn).await })
            .await
    }

    /// Runs `f` on the connection, dialing first if there is none. A call that fails on a
    /// connection dialed earlier, for any reason but Redis's answer, is tried once more on a
    /// fresh one (the old one may have died idle): every call here is safe to repeat.
    async fn call<T, F>(&mut self, f: impl Fn(MultiplexedConnection) -> F) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let timeout = self.timeout;
        let result = bounded(&self.clock.clone(), timeout, async {
            let reused = self.conn.is_some();
            let first = f(self.connection().await?).await;
            match first {
                Err(error) if reused && !matches!(error.kind(), ErrorKind::Server(_)) => {
                    self.conn = None;
                    f(self.connection().await?).await
                }
                other => other,
            }
        })
        .await;
        if let Err(error) = &result {
            if !matches!(error.kind(), ErrorKind::Server(_)) {
                self.conn = None;
            }
        }
        result
    }

    async fn connection(&mut self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}

/// `future`, or a timeout error after `timeout`.
async fn bounded<T>(
    clock: &Clock,
    timeout: Duration,
    future: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    futures_lite::future::or(future, async {
        clock.after(timeout).await;
        Err(RedisError::from(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from Redis within {timeout:?}"),
        )))
    })
    .await
}
