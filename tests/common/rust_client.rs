//! Helpers for tests of the Rust client module (`rollcall::client`): a configuration that
//! reconnects quickly, connecting up to the first event, and waiting for the next event.

use std::time::Duration;

use rollcall::client::{Client, ClientConfig, Event};
use tokio::time::timeout;

use super::{Server, TIMEOUT};

/// A client configuration for `user` that reconnects quickly (tests kill and drop connections).
pub fn config(server: &Server, user: &str) -> ClientConfig {
    let mut config = ClientConfig::new(server.ws_url(), super::token(user));
    config.reconnect_delay = Duration::from_millis(50);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// Connects and takes the first event, which must be `Connected`.
pub async fn connect(config: ClientConfig) -> Client {
    let client = timeout(TIMEOUT, Client::connect(config))
        .await
        .expect("connecting took too long")
        .expect("connecting failed");
    match next_event(&client).await {
        Event::Connected { user, .. } => assert_eq!(user, client.user()),
        other => panic!("the first event should be Connected, got {other:?}"),
    }
    client
}

/// The next event, within `TIMEOUT`.
pub async fn next_event(client: &Client) -> Event {
    match timeout(TIMEOUT, client.next_event()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("[{}] the client closed", client.user()),
        Err(_) => panic!("[{}] no event within {TIMEOUT:?}", client.user()),
    }
}
