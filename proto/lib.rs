//! The ordermesh contracts: typed tonic clients and servers for every package
//! under `proto/`, and the encoded file descriptor set that reflection (and
//! later the REST gateway) serve.
//!
//! Generated code is included from `OUT_DIR`; nothing here is edited by hand.

/// Encoded `FileDescriptorSet` of every ordermesh proto and its imports, with
/// extension options such as `google.api.http` intact.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ordermesh_descriptor.bin"));

/// Types shared by several packages.
pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.common.v1.rs"));

        impl Money {
            pub fn new(amount_minor: i64, currency_code: &str) -> Self {
                Self {
                    amount_minor,
                    currency_code: currency_code.to_owned(),
                }
            }
        }
    }
}

/// `ordermesh.inventory.v1`: catalogue, stock and reservations.
pub mod inventory {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.inventory.v1.rs"));
    }
}

/// `ordermesh.payment.v1`: accounts, payments and the ledger.
pub mod payment {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.payment.v1.rs"));
    }
}

/// `ordermesh.order.v1`: orders and their saga.
pub mod order {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.order.v1.rs"));
    }
}

/// `ordermesh.events.v1`: domain event payloads and the event admin API.
pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.events.v1.rs"));
    }
}

/// `ordermesh.mesh.v1`: the mesh admin API (breakers, faults, flags).
pub mod mesh {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ordermesh.mesh.v1.rs"));
    }
}

/// The `google.rpc.ErrorInfo` domains and reasons the services put on their
/// errors. They are part of the contract: callers (the order saga, clients in
/// any language) branch on these, never on message text.
pub mod error_reasons {
    /// Reasons of `ordermesh.inventory.v1` errors.
    pub mod inventory {
        pub const DOMAIN: &str = "inventory.ordermesh";
        pub const UNKNOWN_SKU: &str = "UNKNOWN_SKU";
        pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
        pub const MIXED_CURRENCIES: &str = "MIXED_CURRENCIES";
        pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
        pub const RESERVATION_EXPIRED: &str = "RESERVATION_EXPIRED";
        pub const RESERVATION_NOT_ACTIVE: &str = "RESERVATION_NOT_ACTIVE";
        pub const STOCK_BELOW_ZERO: &str = "STOCK_BELOW_ZERO";
        pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
        pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
    }

    /// Reasons of `ordermesh.payment.v1` errors.
    pub mod payment {
        pub const DOMAIN: &str = "payment.ordermesh";
        pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
        pub const PAYMENT_NOT_FOUND: &str = "PAYMENT_NOT_FOUND";
        pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
        pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
        pub const INVALID_PAYMENT_STATE: &str = "INVALID_PAYMENT_STATE";
        pub const AUTHORIZATION_VOIDED: &str = "AUTHORIZATION_VOIDED";
        pub const AUTHORIZATION_EXPIRED: &str = "AUTHORIZATION_EXPIRED";
        pub const ACCOUNT_EXISTS: &str = "ACCOUNT_EXISTS";
    }

    /// Reasons of `ordermesh.order.v1` errors.
    pub mod order {
        pub const DOMAIN: &str = "order.ordermesh";
        pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
        pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
        pub const ORDER_NOT_CANCELLABLE: &str = "ORDER_NOT_CANCELLABLE";
        pub const SAGA_NOT_FOUND: &str = "SAGA_NOT_FOUND";
        pub const SAGA_FINISHED: &str = "SAGA_FINISHED";
        /// CreateOrder with the availability precheck on: a line cannot be
        /// filled now.
        pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
        /// CreateOrder with the availability precheck on: a line names a SKU
        /// the catalogue does not have.
        pub const UNKNOWN_SKU: &str = "UNKNOWN_SKU";
    }
}
