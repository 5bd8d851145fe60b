//! `ordermesh.order.v1.OrderAdminService`: an operator's view of the saga.
//! Lists unfinished sagas (those stopped for an operator first of all, with
//! their last error) and re-drives one once its cause is fixed.

use tonic::{Request, Response, Status};

use ordermesh_proto::order::v1 as pb;
use ordermesh_proto::order::v1::order_admin_service_server::OrderAdminService;
use ordermesh_runtime::validate::{MAX_ID_LEN, invalid_field, require_id, too_long};
use ordermesh_runtime::{clock, paging};

use crate::saga::SagaRunner;
use crate::store::{self, Store};

pub struct OrderAdmin {
    store: Store,
    runner: SagaRunner,
}

impl OrderAdmin {
    pub fn new(store: Store, runner: SagaRunner) -> Self {
        Self { store, runner }
    }
}

fn saga_to_pb(saga: store::Saga) -> pb::Saga {
    use store::{SagaKind as K, SagaState as S, Step as T};
    pb::Saga {
        kind: match saga.kind {
            K::Place => pb::SagaKind::Place,
            K::Cancel => pb::SagaKind::Cancel,
        }
        .into(),
        state: match saga.state {
            S::Running => pb::SagaState::Running,
            S::Compensating => pb::SagaState::Compensating,
            S::Done => pb::SagaState::Done,
        }
        .into(),
        step: match saga.step {
            T::Reserve => pb::SagaStep::Reserve,
            T::Authorize => pb::SagaStep::Authorize,
            T::Capture => pb::SagaStep::Capture,
            T::Commit => pb::SagaStep::Commit,
            T::Confirm => pb::SagaStep::Confirm,
            T::UndoPayment => pb::SagaStep::UndoPayment,
            T::Release => pb::SagaStep::Release,
            T::Finish => pb::SagaStep::Finish,
        }
        .into(),
        attempts: saga.attempts,
        needs_attention: saga.needs_attention,
        step_start_time: Some(clock::timestamp(saga.step_since)),
        update_time: Some(clock::timestamp(saga.update_time)),
        lease_expire_time: Some(clock::timestamp(saga.lease_until)),
        trace_id: ordermesh_mesh::trace::trace_id_of(&saga.traceparent).to_owned(),
        order_id: saga.order_id,
        last_error: saga.last_error,
        lease_owner: saga.lease_owner,
    }
}

#[tonic::async_trait]
impl OrderAdminService for OrderAdmin {
    async fn get_saga(
        &self,
        request: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let saga = self
            .store
            .saga(&order_id)
            .await?
            .ok_or(crate::error::Error::NotFound { order_id })?;
        Ok(Response::new(pb::GetSagaResponse {
            saga: Some(saga_to_pb(saga)),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let request = request.into_inner();
        let size = paging::page_size(request.page_size)?;
        let after = paging::decode_time_id(&request.page_token)?;
        let mut sagas = self
            .store
            .list_sagas(request.needs_attention_only, after, size + 1)
            .await?;
        let next_page_token = paging::next_page(&mut sagas, size, |s| {
            paging::time_id_key(s.update_time, &s.order_id)
        });
        Ok(Response::new(pb::ListSagasResponse {
            sagas: sagas.into_iter().map(saga_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::RetrySagaResponse>, Status> {
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let saga = self.runner.retry(&order_id).await?;
        Ok(Response::new(pb::RetrySagaResponse {
            saga: Some(saga_to_pb(saga)),
        }))
    }

    async fn list_confirmation_notices(
        &self,
        request: Request<pb::ListConfirmationNoticesRequest>,
    ) -> Result<Response<pb::ListConfirmationNoticesResponse>, Status> {
        let request = request.into_inner();
        if too_long(&request.customer_id, MAX_ID_LEN) {
            return Err(invalid_field("customer_id", "is too long"));
        }
        let size = paging::page_size(request.page_size)?;
        let before = paging::decode_time_id(&request.page_token)?;
        let mut notices = self.store.notices(&request.customer_id, before, size + 1).await?;
        let next_page_token = paging::next_page(&mut notices, size, |n| {
            paging::time_id_key(n.create_time, &n.order_id)
        });
        Ok(Response::new(pb::ListConfirmationNoticesResponse {
            notices: notices
                .into_iter()
                .map(|n| pb::ConfirmationNotice {
                    create_time: Some(clock::timestamp(n.create_time)),
                    order_id: n.order_id,
                    customer_id: n.customer_id,
                    message: n.message,
                    event_id: n.event_id,
                })
                .collect(),
            next_page_token,
        }))
    }
}
