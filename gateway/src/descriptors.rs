//! The descriptor pool the gateway works from: the contracts (with their
//! `google.api.http` options and comments) plus `google.rpc`'s error details,
//! so a status's details render as JSON by their type URLs.

use prost_reflect::DescriptorPool;

/// The public services: what the gateway routes, documents and reflects.
pub const PUBLIC_SERVICES: &[&str] = &[
    "ordermesh.order.v1.OrderService",
    "ordermesh.order.v1.OrderAdminService",
    "ordermesh.inventory.v1.InventoryService",
    "ordermesh.payment.v1.PaymentService",
    "ordermesh.events.v1.EventAdminService",
    "ordermesh.mesh.v1.MeshAdminService",
];

/// The compiled-in descriptor sets, decoded once for the process; they are
/// built with the binary, so a failure here is a build defect.
pub fn pool() -> &'static DescriptorPool {
    static POOL: std::sync::LazyLock<DescriptorPool> = std::sync::LazyLock::new(|| {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(ordermesh_proto::FILE_DESCRIPTOR_SET)
            .expect("the contracts' descriptor set decodes");
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .expect("google.rpc's descriptor set decodes");
        pool
    });
    &POOL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_service_is_in_the_pool_and_rules_parse() {
        let pool = pool();
        for service in PUBLIC_SERVICES {
            assert!(pool.get_service_by_name(service).is_some(), "{service} missing");
        }
        let bindings = crate::rules::bindings(pool, PUBLIC_SERVICES).expect("every http rule is valid");
        let cancel = bindings
            .iter()
            .find(|b| b.method.name() == "CancelOrder")
            .expect("CancelOrder is bound");
        assert_eq!(cancel.verb, http::Method::POST);
        assert_eq!(cancel.template.verb.as_deref(), Some("cancel"));
        assert_eq!(cancel.body.as_deref(), Some("*"));
        assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
    }
}
