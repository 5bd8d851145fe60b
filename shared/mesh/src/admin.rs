//! `ordermesh.mesh.v1.MeshAdminService`: reads a process's mesh state and
//! changes fault rules and feature flags at runtime (chaos engineering,
//! operations, tests).

use tonic::{Request, Response, Status};

use ordermesh_proto::mesh::v1 as pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_server::MeshAdminService;

use crate::classify::code_name;
use crate::fault::FaultRule;
use crate::flags::Flag;
use crate::policy::FaultSection;
use crate::stack::{DownstreamSnapshot, Mesh};

pub struct MeshAdmin {
    mesh: Mesh,
}

impl MeshAdmin {
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn rule_to_pb(rule: &FaultRule) -> pb::FaultRule {
    pb::FaultRule {
        method: rule.method.clone().unwrap_or_default(),
        delay_percent: rule.delay_percent,
        delay_ms: millis(rule.delay),
        abort_percent: rule.abort_percent,
        abort_code: code_name(rule.abort_code).to_owned(),
    }
}

fn downstream_to_pb(d: DownstreamSnapshot) -> pb::DownstreamState {
    pb::DownstreamState {
        breaker_state: d.breaker_state.as_str().to_owned(),
        breaker_opens_for_ms: d.breaker_opens_for.map(millis).unwrap_or(0),
        breaker_opened_total: d.breaker_opened_total,
        breaker_rejected_total: d.breaker_rejected_total,
        retry_tokens: d.retry_tokens,
        retry_max_tokens: d.retry_max_tokens,
        endpoints: d
            .endpoints
            .into_iter()
            .map(|e| pb::EndpointState {
                address: e.address,
                ejected: e.ejected,
                ejected_for_ms: e.ejected_for.map(millis).unwrap_or(0),
                consecutive_failures: e.consecutive_failures,
            })
            .collect(),
        faults: d.faults.iter().map(rule_to_pb).collect(),
        name: d.name,
    }
}

fn flags_to_pb(mesh: &Mesh) -> Vec<pb::Flag> {
    mesh.flags()
        .snapshot()
        .into_iter()
        .map(|(name, f)| pb::Flag {
            name,
            enabled: f.enabled,
            rollout_percent: f.rollout_percent,
            description: f.description,
        })
        .collect()
}

#[tonic::async_trait]
impl MeshAdminService for MeshAdmin {
    async fn get_mesh_state(
        &self,
        _request: Request<pb::GetMeshStateRequest>,
    ) -> Result<Response<pb::GetMeshStateResponse>, Status> {
        Ok(Response::new(pb::GetMeshStateResponse {
            downstreams: self.mesh.snapshot().into_iter().map(downstream_to_pb).collect(),
            flags: flags_to_pb(&self.mesh),
        }))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        let request = request.into_inner();
        let Some(downstream) = self.mesh.downstream(&request.downstream) else {
            let known: Vec<String> = self.mesh.snapshot().into_iter().map(|d| d.name).collect();
            return Err(ordermesh_invalid(
                "downstream",
                &format!(
                    "{:?} is not a downstream of this service (known: {})",
                    request.downstream,
                    known.join(", ")
                ),
            ));
        };
        let rules = request
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                FaultSection {
                    method: Some(r.method.clone()),
                    delay_percent: r.delay_percent,
                    delay_ms: u64::try_from(r.delay_ms).unwrap_or(0),
                    abort_percent: r.abort_percent,
                    abort_code: if r.abort_code.is_empty() {
                        "UNAVAILABLE".into()
                    } else {
                        r.abort_code.clone()
                    },
                }
                .to_rule(&format!("rules[{i}]"))
                .map_err(|e| ordermesh_invalid(&format!("rules[{i}]"), &e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::warn!(downstream = %request.downstream, ?rules, "fault rules set");
        downstream.faults.set(rules);
        let state = self
            .mesh
            .snapshot()
            .into_iter()
            .find(|d| d.name == request.downstream)
            .map(downstream_to_pb);
        Ok(Response::new(pb::SetFaultsResponse { downstream: state }))
    }

    async fn set_flag(
        &self,
        request: Request<pb::SetFlagRequest>,
    ) -> Result<Response<pb::SetFlagResponse>, Status> {
        let flag = request
            .into_inner()
            .flag
            .ok_or_else(|| ordermesh_invalid("flag", "is required"))?;
        if flag.name.trim().is_empty() {
            return Err(ordermesh_invalid("flag.name", "must not be empty"));
        }
        let rollout = if flag.rollout_percent == 0.0 && flag.enabled {
            100.0
        } else {
            flag.rollout_percent
        };
        let rollout = crate::policy::percent("flag.rollout_percent", rollout)
            .map_err(|_| ordermesh_invalid("flag.rollout_percent", "must be between 0 and 100"))?;
        tracing::warn!(flag = %flag.name, enabled = flag.enabled, rollout, "feature flag set");
        self.mesh.flags().set(
            &flag.name,
            Flag {
                enabled: flag.enabled,
                rollout_percent: rollout,
                description: flag.description.clone(),
            },
        );
        Ok(Response::new(pb::SetFlagResponse {
            flag: Some(pb::Flag {
                rollout_percent: rollout,
                ..flag
            }),
        }))
    }
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field.
fn ordermesh_invalid(field: &str, description: &str) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}
