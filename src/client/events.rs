//! The client side of `GET /v1/events`: opens the feed and parses its
//! server-sent events into notices.

use std::time::Duration;

use futures::StreamExt;

use super::{ApiClient, ClientError};
pub use crate::changes::Notice;

/// Maximum silence on an open feed before it counts as lost. The server sends a
/// keep-alive comment every 15 seconds.
const IDLE_LIMIT: Duration = Duration::from_secs(45);

/// Filters of a feed subscription; empty fields match everything.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub group: Option<String>,
    pub prefix: Option<String>,
    /// Notice kinds such as `created` or `access_revoked`.
    pub kinds: Vec<String>,
}

/// An open change feed.
pub struct EventFeed {
    server: String,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    data: String,
}

impl ApiClient {
    /// Opens the change feed after notice sequence `after`; `None` delivers only
    /// notices published from now on.
    pub async fn events(&self, filter: &EventFilter, after: Option<u64>) -> Result<EventFeed, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(group) = &filter.group {
            query.push(("group", group.clone()));
        }
        if let Some(prefix) = &filter.prefix {
            query.push(("prefix", prefix.clone()));
        }
        if !filter.kinds.is_empty() {
            query.push(("kinds", filter.kinds.join(",")));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        // No overall timeout: the response lasts as long as the feed.
        let request = self.http.get(format!("{}/v1/events", self.server)).query(&query);
        let response = self.send(request).await?;
        Ok(EventFeed {
            server: self.server.clone(),
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            data: String::new(),
        })
    }
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("EventFeed").field("server", &self.server).finish_non_exhaustive()
    }
}

impl EventFeed {
    /// Returns the next notice, or `None` when the server ended the feed (it shuts
    /// down); resume with the last notice's `sequence`.
    pub async fn next(&mut self) -> Result<Option<Notice>, ClientError> {
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if let Some(notice) = self.line(&line)? {
                    return Ok(Some(notice));
                }
            }
            let chunk = tokio::time::timeout(IDLE_LIMIT, self.body.next()).await.map_err(|_| {
                ClientError::Protocol(format!("the event feed of {} was silent for {IDLE_LIMIT:?}", self.server))
            })?;
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(source)) => return Err(ClientError::Unreachable { server: self.server.clone(), source }),
                None => return Ok(None),
            }
        }
    }

    /// Handles one line of the event stream; a blank line ends an event.
    fn line(&mut self, line: &[u8]) -> Result<Option<Notice>, ClientError> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if self.data.is_empty() {
                return Ok(None);
            }
            let data = std::mem::take(&mut self.data);
            let notice = serde_json::from_str(&data)
                .map_err(|e| ClientError::Protocol(format!("invalid notice in the event feed: {e}")))?;
            return Ok(Some(notice));
        }
        if let Some(data) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
        }
        // `id:` repeats the notice's sequence, and lines starting with `:` are keep-alives.
        Ok(None)
    }
}
