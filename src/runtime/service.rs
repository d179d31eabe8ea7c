//! What a server runs once its runtime is up, written once for every async runtime: serve
//! alone, or join a cluster first and serve as one of its nodes.

use std::fmt;
use std::io;

use simple_im_core::driver::DriverConfig;
use simple_im_core::server::{NodeId, ServerConfig};
use simple_im_core::users::Users;

use crate::driver::{Runtime, ServerCommand};

/// How the server takes part.
pub enum Role {
    /// One server on its own.
    Alone,
    /// A node of the cluster this configuration names (`--cluster`).
    #[cfg(feature = "cluster")]
    Node(crate::cluster::ClusterConfig),
}

/// Everything a runtime's `serve` is given besides its listener.
pub struct Service {
    /// The accounts.
    pub users: Users,
    /// The hub's settings.
    pub config: ServerConfig,
    /// The driver's settings.
    pub driver: DriverConfig,
    /// Alone or in a cluster.
    pub role: Role,
    /// Called once, just before the first client is served: with the node's id in a cluster
    /// (im-server prints its `listening on` line then, so a client that reads it finds a server
    /// that has joined).
    pub ready: Box<dyn FnOnce(Option<NodeId>)>,
    /// What the process asks of the server while it runs (reload, stop).
    pub commands: async_channel::Receiver<ServerCommand>,
}

/// Why a runtime could not serve.
#[derive(Debug)]
pub enum ServeError {
    /// This runtime could not be set up: its poller, its ring, the listener's registration
    /// (io_uring on a kernel before 6.1, say).
    Runtime(super::Kind, io::Error),
    /// The node could not join its cluster.
    #[cfg(feature = "cluster")]
    Cluster(crate::cluster::ClusterError),
    /// This build or this runtime cannot do what was asked.
    Unsupported(&'static str),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Runtime(kind, error) => {
                write!(f, "cannot set up the {kind} runtime: {error}")
            }
            #[cfg(feature = "cluster")]
            ServeError::Cluster(error) => error.fmt(f),
            ServeError::Unsupported(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ServeError {}

impl ServeError {
    /// Names `kind` as the runtime that could not be set up.
    pub(crate) fn setup(kind: super::Kind) -> impl Fn(io::Error) -> ServeError {
        move |error| ServeError::Runtime(kind, error)
    }
}

/// Runs `service` on `runtime` until a stop it is asked for is done: joins the cluster first
/// for a [`Role::Node`].
pub async fn serve_on<R: Runtime>(
    runtime: R,
    listener: R::Listener,
    service: Service,
) -> Result<(), ServeError> {
    let Service {
        users,
        config,
        driver,
        role,
        ready,
        commands,
    } = service;
    match role {
        Role::Alone => {
            ready(None);
            crate::driver::serve(runtime, listener, users, config, driver, commands).await;
        }
        #[cfg(feature = "cluster")]
        Role::Node(cluster) => {
            let clock = crate::cluster::Clock::of(runtime.clone());
            let membership = crate::cluster::join(clock, &cluster)
                .await
                .map_err(ServeError::Cluster)?;
            let node = membership.node();
            ready(Some(node));
            let server = simple_im_core::server::Server::clustered(users, config, node);
            let server = simple_im_core::driver::ServerDriver::with_server(server, &driver);
            let engine = move |questions, answers| membership.run(questions, answers);
            crate::driver::serve_cluster(runtime, listener, server, &driver, engine, commands)
                .await;
        }
    }
    Ok(())
}
