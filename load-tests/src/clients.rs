//! HTTPS clients of the Watchword server under test.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use watchword::client::ApiClient;
use watchword::config::{self, ClientConfig};

/// Options shared by the scenarios that call the server's API.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// CLI configuration file of an operator: server URL, CA and client certificate.
    #[arg(long, env = "WATCHWORD_CONFIG")]
    pub config: PathBuf,
    /// Number of separate mTLS connections the workers share, round robin.
    ///
    /// Each client negotiates HTTP/2, so one connection carries every request in
    /// flight as concurrent streams.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

/// API clients with separate connection pools.
#[derive(Debug, Clone)]
pub struct Clients {
    clients: Vec<ApiClient>,
}

impl Clients {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Clients> {
        anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
        let config: ClientConfig = config::load(&args.config)?;
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            anyhow::bail!("{} must name a client certificate (cert and key)", args.config.display());
        };
        let clients = (0..args.connections)
            .map(|_| ApiClient::new(&config.server, &config.ca, cert, key))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot build an API client from {}", args.config.display()))?;
        Ok(Clients { clients })
    }

    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Returns the client of a worker.
    pub fn for_worker(&self, worker: usize) -> &ApiClient {
        &self.clients[worker % self.clients.len()]
    }

    /// Opens every connection with one status request, so no measured request
    /// pays for a TLS handshake.
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        for client in &self.clients {
            client.status().await.with_context(|| format!("the server at {} does not answer", client.server()))?;
        }
        Ok(())
    }
}
