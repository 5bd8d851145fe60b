//! `ordermesh.events.v1.EventAdminService`: tail events and handle dead
//! letters of this process's bus over gRPC. With the in-process broker it is
//! the only way in (the CLI's `events tail` / `events dlq` default); with
//! NATS it works too, though tools may read JetStream directly.
//!
//! This is the edge where [`Error`] becomes a `tonic::Status`, once.

use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use ordermesh_proto::events::v1 as pb;
use ordermesh_proto::events::v1::event_admin_service_server::{EventAdminService, EventAdminServiceServer};

use crate::bus::Bus;
use crate::error::Error;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// The admin API over a bus.
pub struct EventAdmin {
    bus: Bus,
}

impl EventAdmin {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    /// The tonic service, ready for `Routes::add_service`.
    pub fn into_server(self) -> EventAdminServiceServer<Self> {
        EventAdminServiceServer::new(self)
    }
}

fn invalid(field: &str, reason: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, reason);
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {reason}"), details)
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid { field, reason } => invalid(field, &reason),
            Error::DeadLetterNotFound(id) => Status::not_found(format!("dead letter {id:?} not found")),
            Error::NotReplayable { .. } => Status::failed_precondition(error.to_string()),
            Error::Connect { .. }
            | Error::JetStream { .. }
            | Error::Publish { .. }
            | Error::ConsumerGone { .. } => {
                tracing::warn!(%error, "event bus unavailable");
                Status::unavailable("event bus unavailable")
            }
            other => {
                tracing::error!(error = %other, "event admin failed");
                Status::internal("event admin error")
            }
        }
    }
}

fn page_size(requested: i32) -> Result<usize, Status> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
        Err(_) => Err(invalid("page_size", "must not be negative")),
    }
}

fn dead_letter_id(text: &str, field: &str) -> Result<u64, Status> {
    text.parse::<u64>()
        .map_err(|_| invalid(field, "must be a dead-letter id as listed by ListDeadLetters"))
}

#[tonic::async_trait]
impl EventAdminService for EventAdmin {
    type TailEventsStream = BoxStream<'static, Result<pb::TailEventsResponse, Status>>;

    async fn tail_events(
        &self,
        request: Request<pb::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        let filter = request.into_inner().subject_filter;
        let events = self.bus.tail(&filter).await.map_err(|e| match e {
            Error::Invalid { reason, .. } => invalid("subject_filter", &reason),
            other => Status::from(other),
        })?;
        let stream = events.map(|item| {
            item.map(|event| pb::TailEventsResponse {
                event: Some(event.to_pb()),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(stream.boxed()))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after = if request.page_token.is_empty() {
            0
        } else {
            dead_letter_id(&request.page_token, "page_token")?
        };
        // One more than asked tells whether another page exists.
        let mut page = self.bus.dead_letters(after, limit + 1).await?;
        let next_page_token = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|d| d.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page.iter().map(|d| d.to_pb()).collect(),
            next_page_token,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let id = dead_letter_id(&request.into_inner().dead_letter_id, "dead_letter_id")?;
        let dead = self.bus.replay(id).await?;
        Ok(Response::new(pb::ReplayDeadLetterResponse {
            dead_letter: Some(dead.to_pb()),
        }))
    }
}
