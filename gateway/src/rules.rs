//! The gateway's routes, read from the contracts at start: every method's
//! `google.api.http` rule (and its `additional_bindings`) becomes a
//! [`Binding`]. Nothing here is written per route: a new annotated RPC in
//! `proto/` is served, documented in `/openapi.json` and guarded by the same
//! scopes table without a change to the gateway.

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

use crate::template::{Template, TemplateError};

/// One REST route of one RPC.
#[derive(Debug, Clone)]
pub struct Binding {
    pub method: MethodDescriptor,
    pub verb: http::Method,
    pub template: Template,
    /// `None`: no body; `Some("*")`: the whole request; `Some(field)`: one field.
    pub body: Option<String>,
    /// The response field sent as the body instead of the whole response.
    pub response_body: Option<String>,
}

impl Binding {
    /// The gRPC path, `/package.Service/Method`: the id that scopes and rate
    /// limits are configured by, the same for REST and gRPC callers.
    pub fn rpc_path(&self) -> String {
        rpc_path(&self.method)
    }
}

/// The first of `routes` (sorted by [`crate::sort_routes`]) that binds
/// `method` and `path`, with its path variables.
pub fn route<'a>(
    routes: &'a [Binding],
    method: &http::Method,
    path: &str,
) -> Option<(&'a Binding, crate::template::Captures)> {
    routes
        .iter()
        .filter(|b| b.verb == method)
        .find_map(|b| b.template.matches(path).map(|vars| (b, vars)))
}

pub fn rpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{method}: {source}")]
    Template {
        method: String,
        #[source]
        source: TemplateError,
    },
    #[error("{method}: {reason}")]
    Rule { method: String, reason: String },
}

/// Every binding of every method of `services` (full names), in declaration
/// order.
pub fn bindings(pool: &DescriptorPool, services: &[&str]) -> Result<Vec<Binding>, RuleError> {
    let Some(extension) = pool.get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for service in pool.services().filter(|s| services.contains(&s.full_name())) {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let value = options.get_extension(&extension);
            let Value::Message(rule) = value.as_ref() else {
                continue;
            };
            push_rule(&method, rule, true, &mut out)?;
        }
    }
    Ok(out)
}

fn push_rule(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    top: bool,
    out: &mut Vec<Binding>,
) -> Result<(), RuleError> {
    let rule_error = |reason: String| RuleError::Rule {
        method: method.full_name().to_owned(),
        reason,
    };
    let string = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|s| !s.is_empty())
    };
    let (verb, pattern) = if let Some(p) = string("get") {
        (http::Method::GET, p)
    } else if let Some(p) = string("post") {
        (http::Method::POST, p)
    } else if let Some(p) = string("put") {
        (http::Method::PUT, p)
    } else if let Some(p) = string("patch") {
        (http::Method::PATCH, p)
    } else if let Some(p) = string("delete") {
        (http::Method::DELETE, p)
    } else if let Some(custom) = rule
        .get_field_by_name("custom")
        .and_then(|v| v.as_message().cloned())
        .filter(|m| {
            m.get_field_by_name("kind")
                .is_some_and(|k| k.as_str() != Some(""))
        })
    {
        let kind = custom
            .get_field_by_name("kind")
            .and_then(|k| k.as_str().map(str::to_owned));
        let path = custom
            .get_field_by_name("path")
            .and_then(|k| k.as_str().map(str::to_owned));
        let verb = http::Method::from_bytes(kind.unwrap_or_default().as_bytes())
            .map_err(|_| rule_error("bad custom verb".to_owned()))?;
        (verb, path.unwrap_or_default())
    } else {
        return Err(rule_error("an http rule without a pattern".to_owned()));
    };
    let template = Template::parse(&pattern).map_err(|source| RuleError::Template {
        method: method.full_name().to_owned(),
        source,
    })?;
    let body = string("body");
    let response_body = string("response_body");
    let input = method.input();
    let output = method.output();
    if let Some(field) = body.as_deref().filter(|b| *b != "*")
        && input.get_field_by_name(field).is_none()
    {
        return Err(rule_error(format!(
            "body field {field:?} is not in {}",
            input.full_name()
        )));
    }
    if let Some(field) = response_body.as_deref()
        && output.get_field_by_name(field).is_none()
    {
        return Err(rule_error(format!(
            "response_body field {field:?} is not in {}",
            output.full_name()
        )));
    }
    for variable in &template.variables {
        if crate::fields::resolve(&input, &variable.field_path).is_none() {
            return Err(rule_error(format!(
                "path variable {:?} is not a field of {}",
                variable.field(),
                input.full_name()
            )));
        }
    }
    out.push(Binding {
        method: method.clone(),
        verb,
        template,
        body,
        response_body,
    });
    if top
        && let Some(additional) = rule.get_field_by_name("additional_bindings")
        && let Some(list) = additional.as_list()
    {
        for nested in list {
            if let Some(nested) = nested.as_message() {
                push_rule(method, nested, false, out)?;
            }
        }
    }
    Ok(())
}
