//! Field paths (`flag.name`, `lines.sku`) resolved against message
//! descriptors, by proto name or by JSON (lowerCamelCase) name: the one lookup
//! path variables, query parameters and the OpenAPI document share.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// The field at `path` under `message`, descending through message fields.
pub fn resolve<S: AsRef<str>>(message: &MessageDescriptor, path: &[S]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for part in parents {
        let field = field(&current, part.as_ref())?;
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
            _ => return None,
        }
    }
    field(&current, last.as_ref())
}

fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}
