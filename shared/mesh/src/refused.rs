//! The mesh's own answers: a call the stack answered without sending it (an
//! open breaker, an injected abort, a deadline spent before the call could
//! start) is marked with a typed [`NotSent`], the way linkerd2-proxy marks
//! its fail-fast answers with `FailFastError` rather than with a string.
//!
//! Why it matters to callers: a call that was never sent cannot have taken
//! effect, so the order saga need not treat it as possibly done, and the
//! retry layer must not retry an open breaker's answer into it.
//!
//! How the marker travels:
//! - inside the stack, on the trailers-only response the layer produced, as
//!   a response extension ([`NotSent::mark`], [`NotSent::of_response`]);
//! - at the top of the stack ([`crate::stack::MeshChannel`]), as the
//!   `source` of the `tonic::Status` the generated client returns
//!   ([`NotSent::of_status`]). tonic keeps an error's `Status` whole, source
//!   included, while it rebuilds a status from a response's headers, which
//!   would lose any extension.
//!
//! Nothing of it is put on the wire: a gateway relaying such an answer sends
//! the status alone.

use http::Response;
use tonic::body::Body;

use crate::classify::status_response;

/// Why the mesh answered a call itself, without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// The downstream's circuit breaker is open (or half-open with every
    /// probe out): the answer is UNAVAILABLE until the next probe, due in
    /// `retry_after`.
    #[error("refused by the circuit breaker; next probe in {retry_after:?}")]
    Breaker { retry_after: std::time::Duration },
    /// A fault rule aborted the call (`MeshAdminService/SetFaults`).
    #[error("aborted by an injected fault")]
    Fault,
    /// The call's deadline was spent before it could be sent.
    #[error("deadline spent before sending")]
    Deadline,
}

impl NotSent {
    /// A trailers-only response carrying `status`, marked as not sent.
    pub fn respond(self, mut status: tonic::Status) -> Response<Body> {
        status.set_source(std::sync::Arc::new(self));
        let mut response = status_response(status);
        response.extensions_mut().insert(self);
        response
    }

    /// Whether a response inside the stack is the mesh's own answer.
    pub fn of_response<B>(response: &Response<B>) -> Option<NotSent> {
        response.extensions().get::<NotSent>().copied()
    }

    /// Whether a status a client got is the mesh's own answer.
    pub fn of_status(status: &tonic::Status) -> Option<NotSent> {
        let source: &(dyn std::error::Error + 'static) = std::error::Error::source(status)?;
        source.downcast_ref::<NotSent>().copied()
    }

    /// The status of a marked response, taken out of it whole (its source
    /// included), for the top of the stack to return as the call's error.
    pub(crate) fn take_status<B>(response: &mut Response<B>) -> Option<tonic::Status> {
        response.extensions().get::<NotSent>()?;
        response.extensions_mut().remove::<tonic::Status>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_survives_from_response_to_status() {
        let breaker = NotSent::Breaker {
            retry_after: std::time::Duration::from_millis(1500),
        };
        for reason in [breaker, NotSent::Fault, NotSent::Deadline] {
            let mut response = reason.respond(tonic::Status::unavailable("no"));
            assert_eq!(NotSent::of_response(&response), Some(reason));
            let status = NotSent::take_status(&mut response).expect("a marked response holds its status");
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(NotSent::of_status(&status), Some(reason));
        }
    }

    #[test]
    fn an_answer_from_a_server_is_not_marked() {
        let mut response = status_response(tonic::Status::unavailable("from the server"));
        assert_eq!(NotSent::of_response(&response), None);
        assert!(NotSent::take_status(&mut response).is_none());
        assert_eq!(NotSent::of_status(&tonic::Status::unavailable("x")), None);
    }
}
