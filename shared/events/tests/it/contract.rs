//! The events' contract at the producer: an event that breaks it is refused
//! by the outbox, so the producing transaction fails and nothing is written.

use ordermesh_events::outbox::pending_count;
use ordermesh_events::{Error, Outbox};

use crate::harness::{Backend, Db};
use crate::support::order_confirmed;

async fn the_outbox_refuses_an_invalid_event(backend: Backend) {
    let Some(db) = Db::new(backend).await else { return };
    let outbox = Outbox::new("/ordermesh/test");
    let mut tx = db.pool.begin().await.expect("begin");
    let refused = outbox
        .add(&mut tx, &order_confirmed(""), None)
        .await
        .expect_err("an OrderConfirmed for no order");
    assert!(
        matches!(&refused, Error::InvalidEvent { reason, .. } if reason == "order_id is empty"),
        "{refused}"
    );
    outbox
        .add(&mut tx, &order_confirmed("o-1"), None)
        .await
        .expect("a valid one is written");
    tx.commit().await.expect("commit");
    assert_eq!(pending_count(&db.pool).await.expect("pending"), 1);
}

crate::per_backend!(the_outbox_refuses_an_invalid_event);
