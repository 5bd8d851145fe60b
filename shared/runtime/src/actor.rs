//! Who a call acts for, decided by the service that owns the data: object
//! access is checked where the data lives (a customer reads its own orders,
//! payments and account), not only at the gateway, whose scope check is a
//! first filter.
//!
//! The gateway verifies the caller's token and forwards its identity as
//! metadata ([`SUBJECT_HEADER`], [`CUSTOMER_HEADER`], [`SCOPES_HEADER`]),
//! after dropping any copy a client sent. Whether a service believes that
//! metadata depends on how it knows its peer ([`Trust`]):
//! - with mutual TLS ([`Trust::Certificates`]), the peer's certificate names
//!   it ([`PeerTarget`], set by the TLS acceptor): forwarded identity is
//!   taken from the gateway only; another ordermesh service (the order
//!   service's saga) acts for itself; the `admin` certificate is an
//!   operator's; anyone else is anonymous, whatever headers it sends;
//! - without TLS ([`Trust::Network`]), the network is the boundary (`up`'s
//!   loopback ports, a NetworkPolicy, an external mesh's authorization):
//!   forwarded identity is taken as it comes, and a call without any is a
//!   peer inside the boundary acting for itself.

use std::collections::BTreeSet;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// The verified token's subject (`sub`).
pub const SUBJECT_HEADER: &str = "x-ordermesh-subject";
/// The customer the token acts for (its `customer_id` claim, else its subject).
pub const CUSTOMER_HEADER: &str = "x-ordermesh-customer";
/// The token's scopes, space-separated.
pub const SCOPES_HEADER: &str = "x-ordermesh-scopes";
/// The scope of an operator: acts for any customer and calls admin RPCs.
pub const OPERATOR_SCOPE: &str = "admin";

/// How a service knows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// No TLS: the network is the boundary (see the module docs).
    #[default]
    Network,
    /// Mutual TLS: each peer is named by its certificate.
    Certificates,
}

pub use ordermesh_mesh::tls::PeerTarget;

/// Who a call acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An end user, acting for one customer.
    Customer {
        subject: String,
        customer: String,
        scopes: BTreeSet<String>,
    },
    /// An operator (the `admin` scope, or the `admin` certificate): acts for
    /// any customer and calls admin RPCs.
    Operator { subject: String },
    /// A peer acting for its own work: another ordermesh service (the
    /// saga's calls), or, without TLS, a caller inside the boundary that
    /// came with no forwarded identity.
    Service { name: String },
    /// Nobody this service can name: refused wherever identity matters.
    Anonymous,
}

impl Actor {
    /// The actor of a call, from its metadata and (with TLS) its peer.
    pub fn of<T>(request: &tonic::Request<T>, trust: Trust) -> Actor {
        let peer = request.extensions().get::<PeerTarget>().map(|p| p.0.as_str());
        Actor::from_parts(request.metadata(), peer, trust)
    }

    /// [`Actor::of`], from its parts.
    pub fn from_parts(metadata: &MetadataMap, peer: Option<&str>, trust: Trust) -> Actor {
        match trust {
            Trust::Network => forwarded(metadata).unwrap_or(Actor::Service {
                name: "unauthenticated peer".into(),
            }),
            Trust::Certificates => match peer {
                Some("gateway") => forwarded(metadata).unwrap_or(Actor::Anonymous),
                Some("admin") => Actor::Operator {
                    subject: "admin certificate".into(),
                },
                Some(name @ ("order" | "inventory" | "payment")) => Actor::Service { name: name.into() },
                _ => Actor::Anonymous,
            },
        }
    }

    /// Whether it may act on `customer`'s data.
    pub fn may_act_for(&self, customer: &str) -> bool {
        match self {
            Actor::Customer { customer: own, .. } => own == customer,
            Actor::Operator { .. } | Actor::Service { .. } => true,
            Actor::Anonymous => false,
        }
    }

    /// The one customer it is confined to, if any (an operator or a service
    /// is not confined).
    pub fn confined_to(&self) -> Option<&str> {
        match self {
            Actor::Customer { customer, .. } => Some(customer),
            _ => None,
        }
    }

    /// Whether it holds `scope` (an operator and a service hold every one).
    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            Actor::Customer { scopes, .. } => scopes.contains(scope),
            Actor::Operator { .. } | Actor::Service { .. } => true,
            Actor::Anonymous => false,
        }
    }

    /// Ok when it holds `scope`; else PERMISSION_DENIED naming the scope and
    /// `what` (UNAUTHENTICATED for nobody).
    pub fn require_scope(&self, scope: &str, what: &str) -> Result<(), Status> {
        match self {
            _ if self.has_scope(scope) => Ok(()),
            Actor::Anonymous => Err(unauthenticated(what)),
            _ => Err(Status::permission_denied(format!(
                "{what} needs the {scope} scope"
            ))),
        }
    }

    /// Ok for an operator or a service (the saga); else UNAUTHENTICATED for
    /// nobody and PERMISSION_DENIED for a customer, naming `what`.
    pub fn require_privileged(&self, what: &str) -> Result<(), Status> {
        match self {
            Actor::Operator { .. } | Actor::Service { .. } => Ok(()),
            Actor::Customer { .. } => Err(Status::permission_denied(format!(
                "{what} is for operators and ordermesh services, not a customer's token"
            ))),
            Actor::Anonymous => Err(unauthenticated(what)),
        }
    }

    /// Ok for an operator (or, without TLS, a peer inside the boundary);
    /// else as [`Actor::require_privileged`]. With TLS, another service is
    /// no operator.
    pub fn require_operator(&self, what: &str, trust: Trust) -> Result<(), Status> {
        match (self, trust) {
            (Actor::Operator { .. }, _) | (Actor::Service { .. }, Trust::Network) => Ok(()),
            (Actor::Anonymous, _) => Err(unauthenticated(what)),
            _ => Err(Status::permission_denied(format!(
                "{what} needs an operator (the {OPERATOR_SCOPE} scope)"
            ))),
        }
    }
}

fn unauthenticated(what: &str) -> Status {
    Status::unauthenticated(format!("{what} needs an identity this service can verify"))
}

/// The identity the gateway forwarded, if any: an operator when its scopes
/// include [`OPERATOR_SCOPE`], else a customer.
fn forwarded(metadata: &MetadataMap) -> Option<Actor> {
    let text = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let subject = text(SUBJECT_HEADER)?.to_owned();
    let scopes: BTreeSet<String> = text(SCOPES_HEADER)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.contains(OPERATOR_SCOPE) {
        return Some(Actor::Operator { subject });
    }
    let customer = text(CUSTOMER_HEADER).unwrap_or(&subject).to_owned();
    Some(Actor::Customer {
        subject,
        customer,
        scopes,
    })
}

/// A tonic interceptor for a whole admin service (mesh, events, sagas):
/// operators only (see [`Actor::require_operator`]).
#[derive(Debug, Clone, Copy)]
pub struct OperatorOnly(pub Trust);

impl tonic::service::Interceptor for OperatorOnly {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        Actor::of(&request, self.0).require_operator("this admin API", self.0)?;
        Ok(request)
    }
}

/// An admin service behind [`OperatorOnly`].
pub type OperatorsOnly<S> = tonic::service::interceptor::InterceptedService<S, OperatorOnly>;

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().expect("ascii"));
        }
        map
    }

    fn bob() -> MetadataMap {
        metadata(&[
            (SUBJECT_HEADER, "bob"),
            (SCOPES_HEADER, "orders:read orders:write"),
        ])
    }

    #[test]
    fn a_forwarded_token_acts_for_its_own_customer_only() {
        let actor = Actor::from_parts(&bob(), None, Trust::Network);
        assert!(actor.may_act_for("bob"));
        assert!(!actor.may_act_for("alice"));
        assert_eq!(actor.confined_to(), Some("bob"));
        assert!(actor.has_scope("orders:read") && !actor.has_scope("admin"));
        let claimed = metadata(&[(SUBJECT_HEADER, "u-17"), (CUSTOMER_HEADER, "carol")]);
        let actor = Actor::from_parts(&claimed, None, Trust::Network);
        assert!(actor.may_act_for("carol") && !actor.may_act_for("u-17"));
    }

    #[test]
    fn the_admin_scope_is_an_operator() {
        let md = metadata(&[(SUBJECT_HEADER, "ops"), (SCOPES_HEADER, "admin")]);
        let actor = Actor::from_parts(&md, None, Trust::Network);
        assert_eq!(
            actor,
            Actor::Operator {
                subject: "ops".into()
            }
        );
        assert!(actor.may_act_for("anyone"));
        assert!(actor.require_operator("x", Trust::Certificates).is_ok());
    }

    #[test]
    fn with_certificates_only_the_gateway_forwards_identity() {
        let from_gateway = Actor::from_parts(&bob(), Some("gateway"), Trust::Certificates);
        assert_eq!(from_gateway.confined_to(), Some("bob"));
        // The same headers from anyone else name nobody.
        for peer in [None, Some("intruder")] {
            let actor = Actor::from_parts(&bob(), peer, Trust::Certificates);
            assert_eq!(actor, Actor::Anonymous, "{peer:?}");
            assert!(!actor.may_act_for("bob"));
        }
        // The saga acts for itself, whatever it forwards.
        let saga = Actor::from_parts(&bob(), Some("order"), Trust::Certificates);
        assert_eq!(saga, Actor::Service { name: "order".into() });
        assert!(saga.require_privileged("AuthorizePayment").is_ok());
        assert!(
            saga.require_operator("SetFaults", Trust::Certificates).is_err(),
            "a service is no operator"
        );
        let admin = Actor::from_parts(&MetadataMap::new(), Some("admin"), Trust::Certificates);
        assert!(matches!(admin, Actor::Operator { .. }));
    }

    #[test]
    fn refusals_say_unauthenticated_or_denied() {
        let customer = Actor::from_parts(&bob(), None, Trust::Network);
        assert_eq!(
            customer
                .require_privileged("AuthorizePayment")
                .expect_err("denied")
                .code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            customer
                .require_operator("SetFaults", Trust::Network)
                .expect_err("denied")
                .code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            Actor::Anonymous
                .require_privileged("x")
                .expect_err("nobody")
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(customer.require_scope("orders:read", "GetOrder").is_ok());
        let denied = customer
            .require_scope("inventory:admin", "AdjustStock")
            .expect_err("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("inventory:admin"),
            "{}",
            denied.message()
        );
        assert_eq!(
            Actor::Anonymous
                .require_scope("x", "y")
                .expect_err("nobody")
                .code(),
            tonic::Code::Unauthenticated
        );
        let operator = Actor::Operator {
            subject: "ops".into(),
        };
        assert!(operator.require_scope("inventory:admin", "AdjustStock").is_ok());
        // Without TLS, a call with no forwarded identity is a peer inside
        // the boundary (the operator's grpcurl on loopback, the saga).
        let inside = Actor::from_parts(&MetadataMap::new(), None, Trust::Network);
        assert!(inside.require_operator("SetFaults", Trust::Network).is_ok());
        assert!(inside.may_act_for("anyone"));
    }
}
