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

/// `ordermesh.events.v1`: domain event payloads.
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
