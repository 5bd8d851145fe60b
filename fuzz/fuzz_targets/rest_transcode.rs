//! A REST request as the gateway reads it: routed by method and path over
//! every `google.api.http` binding of the public services, then transcoded
//! from its path variables, query string and JSON body into the RPC's
//! request message. Input: `METHOD /path?query`, a newline, the body.
//!
//! A request that is refused is refused as INVALID_ARGUMENT (a 400 naming
//! the field), never another status; one that is accepted is a message of
//! the RPC's input type that survives the protobuf wire round trip unchanged and can
//! be written back as JSON.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::descriptors::{PUBLIC_SERVICES, pool};
use ordermesh_gateway::json::{self, JsonOptions};
use ordermesh_gateway::rules::{self, Binding};
use prost_reflect::prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};

static ROUTES: LazyLock<Vec<Binding>> = LazyLock::new(|| {
    let mut routes = rules::bindings(pool(), PUBLIC_SERVICES).expect("the contracts' bindings");
    ordermesh_gateway::sort_routes(&mut routes);
    routes
});

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let Some((method, target)) = line.split_once(' ') else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Some((binding, variables)) = rules::route(&ROUTES, &method, path) else {
        return;
    };
    for deny_unknown_fields in [true, false] {
        let options = JsonOptions { deny_unknown_fields };
        match json::request(binding, variables.clone(), query, body, options) {
            Ok(message) => {
                assert_eq!(message.descriptor(), binding.method.input());
                let wire = message.encode_to_vec();
                let back = DynamicMessage::decode(binding.method.input(), wire.as_slice())
                    .expect("a message the gateway built decodes");
                // Compared on the wire: a proto3 field set to its default
                // (`pageSize=0`) is the same message as one left unset.
                assert_eq!(back.encode_to_vec(), wire);
                json::response(&message, None).expect("an accepted message writes as JSON");
            }
            Err(status) => assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{method} {target}: {status:?}"
            ),
        }
    }
});
