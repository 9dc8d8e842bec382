//! `GET /api/v1/feed`: a live feed (Server-Sent Events) of new events and attempts, for the
//! console. It reads the store (every [`POLL`]), not this instance's memory, so it shows what
//! every instance sharing the database does. Bounded: at most [`MAX_FEEDS`] open per instance,
//! [`BATCH`] events and attempts per poll; every stream ends when the hub shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::admin::AttemptOut;
use super::events::EventSummaryOut;
use crate::error::{ApiError, ApiResult};

/// Feeds open at once on one instance.
pub const MAX_FEEDS: usize = 32;
/// How often a feed looks for news.
pub const POLL: Duration = Duration::from_secs(1);
/// Most events and most attempts one poll sends.
pub const BATCH: u32 = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(feed))
}

/// A feed's state between polls.
struct Cursor {
    state: AppState,
    events: Uuid,
    attempts: Uuid,
    queue: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
}

fn message(kind: &str, data: &impl Serialize) -> Option<Event> {
    Event::default().event(kind).json_data(data).ok()
}

impl Cursor {
    /// The next message, polling the store until there is one; `None` once the hub stops.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        let mut stop = self.state.stop.clone();
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return None,
            }
            let news = self
                .state
                .store
                .feed(Some(self.events), Some(self.attempts), BATCH)
                .await;
            match news {
                Ok(feed) => {
                    self.events = feed.event_cursor;
                    self.attempts = feed.attempt_cursor;
                    let events = feed.events.into_iter().map(EventSummaryOut::from);
                    self.queue
                        .extend(events.filter_map(|e| message("event", &e)));
                    let attempts = feed.attempts.into_iter().map(AttemptOut::from);
                    self.queue
                        .extend(attempts.filter_map(|a| message("attempt", &a)));
                }
                // The database may be back at the next poll; the feed just waits.
                Err(e) => tracing::warn!(error = %e, "the live feed could not read the store"),
            }
        }
    }
}

/// A live feed of what happens from now on: `event` messages (a new event, as in
/// `GET /api/v1/events`) and `attempt` messages (a finished attempt, as in
/// `GET /api/v1/admin/events/{id}/attempts`), oldest first, polled every second.
#[utoipa::path(get, path = "/api/v1/feed", tag = "events",
    responses((status = 200, description = "Server-Sent Events: `event` and `attempt` messages, JSON data", content_type = "text/event-stream", body = String), (status = 503, description = "Too many feeds are open on this instance")))]
async fn feed(
    State(state): State<AppState>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let permit = state.feeds.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "{MAX_FEEDS} live feeds are open on this instance; close one or try another instance"
        ))
    })?;
    let now = state.store.feed(None, None, BATCH).await?;
    let cursor = Cursor {
        state,
        events: now.event_cursor,
        attempts: now.attempt_cursor,
        queue: VecDeque::new(),
        _permit: permit,
    };
    let stream = futures::stream::unfold(cursor, Cursor::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
