//! The `ordermesh.payment.v1.PaymentService` gRPC surface: validates
//! requests, calls the store, converts to protobuf. No SQL here.

use tonic::{Request, Response, Status};

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::payment::v1 as pb;
use ordermesh_proto::payment::v1::payment_service_server::PaymentService;
use ordermesh_runtime::actor::{Actor, Trust};
use ordermesh_runtime::validate::{
    MAX_AMOUNT_MINOR, MAX_ID_LEN, MAX_NAME_LEN, MAX_NOTE_LEN, Violations, invalid_field, is_currency_code,
    require_id, too_long,
};
use ordermesh_runtime::{clock, paging};

use crate::error::Error;
use crate::store::{self, PaymentCursor, Store};

/// Who may do what (decided here, where the money is): a customer's token
/// reads its own account and payments only (another's is NOT_FOUND, as a
/// missing one) and lists only its own; moving money (authorize, capture,
/// void, refund), opening and crediting accounts and reading the ledger are
/// for the order service's saga and operators
/// ([`ordermesh_runtime::actor`]).
pub struct PaymentApi {
    store: Store,
    trust: Trust,
}

impl PaymentApi {
    pub fn new(store: Store, trust: Trust) -> Self {
        Self { store, trust }
    }

    /// Ok when the call's actor is an operator or a service, naming `rpc`.
    fn privileged<T>(&self, request: &Request<T>, rpc: &str) -> Result<(), Status> {
        Actor::of(request, self.trust).require_privileged(rpc)
    }
}

fn money(amount_minor: i64, currency_code: &str) -> Option<Money> {
    Some(Money::new(amount_minor, currency_code))
}

fn account_to_pb(account: store::Account) -> pb::Account {
    let currency = account.currency_code.as_str();
    pb::Account {
        status: match account.status {
            store::AccountStatus::Active => pb::AccountStatus::Active,
            store::AccountStatus::Blocked => pb::AccountStatus::Blocked,
        }
        .into(),
        balance: money(account.balance_minor, currency),
        credit_limit: money(account.credit_limit_minor, currency),
        payment_limit: money(account.payment_limit_minor, currency),
        available: money(account.available_minor(), currency),
        create_time: Some(clock::timestamp(account.create_time)),
        update_time: Some(clock::timestamp(account.update_time)),
        account_id: account.account_id,
        display_name: account.display_name,
    }
}

fn payment_status(status: store::PaymentStatus) -> pb::PaymentStatus {
    use store::PaymentStatus as S;
    match status {
        S::Authorized => pb::PaymentStatus::Authorized,
        S::Declined => pb::PaymentStatus::Declined,
        S::Captured => pb::PaymentStatus::Captured,
        S::Voided => pb::PaymentStatus::Voided,
        S::Refunded => pb::PaymentStatus::Refunded,
    }
}

fn decline_reason(reason: store::DeclineReason) -> pb::DeclineReason {
    use store::DeclineReason as R;
    match reason {
        R::NotDeclined => pb::DeclineReason::Unspecified,
        R::InsufficientFunds => pb::DeclineReason::InsufficientFunds,
        R::AccountBlocked => pb::DeclineReason::AccountBlocked,
        R::AmountOverLimit => pb::DeclineReason::AmountOverLimit,
    }
}

fn void_reason(reason: store::VoidReason) -> pb::VoidReason {
    use store::VoidReason as R;
    match reason {
        R::NotVoided => pb::VoidReason::Unspecified,
        R::Requested => pb::VoidReason::Requested,
        R::HoldExpired => pb::VoidReason::HoldExpired,
    }
}

fn payment_to_pb(p: store::Payment) -> pb::Payment {
    pb::Payment {
        amount: money(p.amount_minor, &p.currency_code),
        status: payment_status(p.status).into(),
        decline_reason: decline_reason(p.decline_reason).into(),
        void_reason: void_reason(p.void_reason).into(),
        expire_time: (p.status == store::PaymentStatus::Authorized).then(|| clock::timestamp(p.expire_time)),
        create_time: Some(clock::timestamp(p.create_time)),
        update_time: Some(clock::timestamp(p.update_time)),
        payment_id: p.payment_id,
        account_id: p.account_id,
        reference: p.reference,
    }
}

fn ledger_entry_to_pb(e: store::LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        amount: money(e.amount_minor, &e.currency_code),
        create_time: Some(clock::timestamp(e.create_time)),
        entry_id: e.entry_id,
        payment_id: e.payment_id.unwrap_or_default(),
        ledger_account: e.ledger_account,
    }
}

/// The position a payment listing resumes after, from its page token.
fn decode_cursor(token: &str) -> Result<Option<PaymentCursor>, Status> {
    Ok(
        paging::decode_time_id(token)?.map(|(create_time, payment_id)| PaymentCursor {
            create_time,
            payment_id,
        }),
    )
}

/// Records violations of a required (or, with `required` false, optional)
/// amount in `min..=MAX_AMOUNT_MINOR` at `field`, in `currency` when given.
fn check_money(
    v: &mut Violations,
    field: &str,
    money: Option<&Money>,
    min: i64,
    required: bool,
    currency: Option<&str>,
) {
    let Some(money) = money else {
        if required {
            v.add(field, "is required");
        }
        return;
    };
    if !(min..=MAX_AMOUNT_MINOR).contains(&money.amount_minor) {
        v.add(
            format!("{field}.amount_minor"),
            format!("must be between {min} and {MAX_AMOUNT_MINOR}"),
        );
    }
    match currency {
        Some(currency) if money.currency_code != currency => v.add(
            format!("{field}.currency_code"),
            format!("must be {currency:?}, the currency of opening_balance"),
        ),
        _ if !is_currency_code(&money.currency_code) => v.add(
            format!("{field}.currency_code"),
            "must be an ISO 4217 code of three upper-case letters",
        ),
        _ => {}
    }
}

/// The checked store input of an OpenAccount request.
fn new_account(request: &pb::OpenAccountRequest) -> Result<store::NewAccount, Status> {
    let mut v = Violations::new();
    v.require_id("request_id", &request.request_id);
    v.require_id("account_id", &request.account_id);
    if too_long(&request.display_name, MAX_NAME_LEN) {
        v.add(
            "display_name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        );
    }
    let opening = request.opening_balance.as_ref();
    check_money(&mut v, "opening_balance", opening, 0, true, None);
    let currency = opening.map(|m| m.currency_code.as_str());
    check_money(
        &mut v,
        "credit_limit",
        request.credit_limit.as_ref(),
        0,
        false,
        currency,
    );
    check_money(
        &mut v,
        "payment_limit",
        request.payment_limit.as_ref(),
        0,
        false,
        currency,
    );
    v.into_result()?;
    let Some(opening) = opening else {
        return Err(invalid_field("opening_balance", "is required"));
    };
    let display_name = if request.display_name.trim().is_empty() {
        request.account_id.clone()
    } else {
        request.display_name.clone()
    };
    Ok(store::NewAccount {
        account_id: request.account_id.clone(),
        display_name,
        currency_code: opening.currency_code.clone(),
        opening_balance_minor: opening.amount_minor,
        credit_limit_minor: request.credit_limit.as_ref().map_or(0, |m| m.amount_minor),
        payment_limit_minor: request
            .payment_limit
            .as_ref()
            .map_or(MAX_AMOUNT_MINOR, |m| m.amount_minor),
    })
}

/// Checks the ids of a capture, void or refund.
fn require_operation(payment_id: &str, request_id: &str) -> Result<(), Status> {
    let mut v = Violations::new();
    v.require_id("payment_id", payment_id);
    v.require_id("request_id", request_id);
    v.into_result()
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let actor = Actor::of(&request, self.trust);
        let account_id = request.into_inner().account_id;
        require_id("account_id", &account_id)?;
        if !actor.may_act_for(&account_id) {
            return Err(Error::AccountNotFound { account_id }.into());
        }
        let account = self.store.account(&account_id).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_to_pb(account)),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        self.privileged(&request, "ListAccounts")?;
        let request = request.into_inner();
        let size = paging::page_size(request.page_size)?;
        let after = paging::decode_token(&request.page_token)?;
        let mut accounts = self.store.accounts_after(after.as_deref(), size + 1).await?;
        let next_page_token = paging::next_page(&mut accounts, size, |a| a.account_id.clone());
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.into_iter().map(account_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::OpenAccountResponse>, Status> {
        self.privileged(&request, "OpenAccount")?;
        let request = request.into_inner();
        let account = new_account(&request)?;
        let account = self.store.open_account(&request.request_id, &account).await?;
        Ok(Response::new(pb::OpenAccountResponse {
            account: Some(account_to_pb(account)),
        }))
    }

    async fn credit_account(
        &self,
        request: Request<pb::CreditAccountRequest>,
    ) -> Result<Response<pb::CreditAccountResponse>, Status> {
        self.privileged(&request, "CreditAccount")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        v.require_id("request_id", &request.request_id);
        v.require_id("account_id", &request.account_id);
        check_money(&mut v, "amount", request.amount.as_ref(), 1, true, None);
        v.into_result()?;
        let Some(amount) = request.amount else {
            return Err(invalid_field("amount", "is required"));
        };
        let account = self
            .store
            .credit_account(
                &request.request_id,
                &request.account_id,
                amount.amount_minor,
                &amount.currency_code,
            )
            .await?;
        Ok(Response::new(pb::CreditAccountResponse {
            account: Some(account_to_pb(account)),
        }))
    }

    async fn authorize_payment(
        &self,
        request: Request<pb::AuthorizePaymentRequest>,
    ) -> Result<Response<pb::AuthorizePaymentResponse>, Status> {
        self.privileged(&request, "AuthorizePayment")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        v.require_id("request_id", &request.request_id);
        v.require_id("account_id", &request.account_id);
        check_money(&mut v, "amount", request.amount.as_ref(), 1, true, None);
        if too_long(&request.reference, MAX_NOTE_LEN) {
            v.add("reference", format!("must be at most {MAX_NOTE_LEN} characters"));
        }
        v.into_result()?;
        let Some(amount) = request.amount else {
            return Err(invalid_field("amount", "is required"));
        };
        let payment = self
            .store
            .authorize(
                &request.request_id,
                &request.account_id,
                amount.amount_minor,
                &amount.currency_code,
                &request.reference,
            )
            .await?;
        match payment.decline_reason {
            store::DeclineReason::NotDeclined => tracing::info!(
                payment_id = %payment.payment_id,
                account_id = %payment.account_id,
                amount_minor = payment.amount_minor,
                status = payment.status.as_str(),
                "payment authorized"
            ),
            reason => tracing::info!(
                payment_id = %payment.payment_id,
                account_id = %payment.account_id,
                reason = reason.as_str(),
                "payment declined"
            ),
        }
        Ok(Response::new(pb::AuthorizePaymentResponse {
            payment: Some(payment_to_pb(payment)),
        }))
    }

    async fn capture_payment(
        &self,
        request: Request<pb::CapturePaymentRequest>,
    ) -> Result<Response<pb::CapturePaymentResponse>, Status> {
        self.privileged(&request, "CapturePayment")?;
        let request = request.into_inner();
        require_operation(&request.payment_id, &request.request_id)?;
        let payment = self
            .store
            .capture(&request.payment_id, &request.request_id)
            .await?;
        Ok(Response::new(pb::CapturePaymentResponse {
            payment: Some(payment_to_pb(payment)),
        }))
    }

    async fn void_authorization(
        &self,
        request: Request<pb::VoidAuthorizationRequest>,
    ) -> Result<Response<pb::VoidAuthorizationResponse>, Status> {
        self.privileged(&request, "VoidAuthorization")?;
        let request = request.into_inner();
        // Exactly one of payment_id and authorize_request_id names the payment.
        let mut v = Violations::new();
        v.require_id("request_id", &request.request_id);
        match (
            request.payment_id.is_empty(),
            request.authorize_request_id.is_empty(),
        ) {
            (true, true) => v.add("payment_id", "is required (or set authorize_request_id)"),
            (false, false) => v.add(
                "authorize_request_id",
                "must be empty when payment_id is set: name the payment one way",
            ),
            (false, true) => v.require_id("payment_id", &request.payment_id),
            (true, false) => v.require_id("authorize_request_id", &request.authorize_request_id),
        }
        v.into_result()?;
        let payment = if request.payment_id.is_empty() {
            self.store
                .void_by_authorize_key(&request.authorize_request_id, &request.request_id)
                .await?
        } else {
            Some(self.store.void(&request.payment_id, &request.request_id).await?)
        };
        Ok(Response::new(pb::VoidAuthorizationResponse {
            payment: payment.map(payment_to_pb),
        }))
    }

    async fn refund_payment(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Result<Response<pb::RefundPaymentResponse>, Status> {
        self.privileged(&request, "RefundPayment")?;
        let request = request.into_inner();
        require_operation(&request.payment_id, &request.request_id)?;
        let payment = self
            .store
            .refund(&request.payment_id, &request.request_id)
            .await?;
        Ok(Response::new(pb::RefundPaymentResponse {
            payment: Some(payment_to_pb(payment)),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let actor = Actor::of(&request, self.trust);
        let payment_id = request.into_inner().payment_id;
        require_id("payment_id", &payment_id)?;
        let payment = self.store.payment(&payment_id).await?;
        if !actor.may_act_for(&payment.account_id) {
            return Err(Error::PaymentNotFound { payment_id }.into());
        }
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment_to_pb(payment)),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let actor = Actor::of(&request, self.trust);
        let mut request = request.into_inner();
        // A customer lists its own account's payments only.
        if let Some(own) = actor.confined_to() {
            if !request.account_id.is_empty() && request.account_id != own {
                return Err(Status::permission_denied(
                    "account_id: this caller may list its own account's payments only",
                ));
            }
            request.account_id = own.to_owned();
        }
        if too_long(&request.account_id, MAX_ID_LEN) {
            return Err(invalid_field(
                "account_id",
                &format!("must be at most {MAX_ID_LEN} characters"),
            ));
        }
        if too_long(&request.authorize_request_id, MAX_ID_LEN) {
            return Err(invalid_field(
                "authorize_request_id",
                &format!("must be at most {MAX_ID_LEN} characters"),
            ));
        }
        let size = paging::page_size(request.page_size)?;
        let after = decode_cursor(&request.page_token)?;
        if !request.authorize_request_id.is_empty() {
            let found = self
                .store
                .payment_by_request(&request.authorize_request_id)
                .await?;
            let payments = found
                .filter(|p| request.account_id.is_empty() || p.account_id == request.account_id)
                .into_iter()
                .map(payment_to_pb)
                .collect();
            return Ok(Response::new(pb::ListPaymentsResponse {
                payments,
                next_page_token: String::new(),
            }));
        }
        let account_id = Some(request.account_id.as_str()).filter(|id| !id.is_empty());
        let mut payments = self
            .store
            .payments_page(account_id, after.as_ref(), size + 1)
            .await?;
        let next_page_token = paging::next_page(&mut payments, size, |p| {
            paging::time_id_key(p.create_time, &p.payment_id)
        });
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: payments.into_iter().map(payment_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        self.privileged(&request, "ListLedgerEntries")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        for (field, value) in [
            ("ledger_account", &request.ledger_account),
            ("payment_id", &request.payment_id),
        ] {
            if too_long(value, MAX_ID_LEN) {
                v.add(field, format!("must be at most {MAX_ID_LEN} characters"));
            }
        }
        v.into_result()?;
        let size = paging::page_size(request.page_size)?;
        let after = paging::decode_token(&request.page_token)?;
        let mut entries = self
            .store
            .ledger_entries(
                &request.ledger_account,
                &request.payment_id,
                after.as_deref(),
                size + 1,
            )
            .await?;
        let next_page_token = paging::next_page(&mut entries, size, |e| e.entry_id.clone());
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            entries: entries.into_iter().map(ledger_entry_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn verify_ledger(
        &self,
        request: Request<pb::VerifyLedgerRequest>,
    ) -> Result<Response<pb::VerifyLedgerResponse>, Status> {
        self.privileged(&request, "VerifyLedger")?;
        let check = self.store.verify_ledger().await?;
        Ok(Response::new(pb::VerifyLedgerResponse {
            balanced: check.balanced(),
            totals: check
                .totals
                .iter()
                .map(|(currency, total)| Money::new(*total, currency))
                .collect(),
            mismatched_account_ids: check.mismatched_account_ids,
            entry_count: check.entry_count,
        }))
    }
}

#[cfg(test)]
mod tests;
