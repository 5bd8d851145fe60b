//! EventAdminService over gRPC: tail with a subject filter, list dead letters
//! page by page, replay; bad input names the field.

use std::time::Duration;

use futures::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::Channel;

use ordermesh_events::admin::EventAdmin;
use ordermesh_events::{BoundedContext, Bus, ConsumerConfig, Event, Handler, HandlerError, worker};
use ordermesh_proto::events::v1 as pb;
use ordermesh_proto::events::v1::event_admin_service_client::EventAdminServiceClient;

use crate::harness::{BusKind, bus, eventually};
use crate::support::{SHORT, order_confirmed, order_created};

struct AlwaysFails;

impl Handler for AlwaysFails {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        Err(HandlerError::poison("rejected by the test"))
    }
}

async fn serve(bus: Bus) -> EventAdminServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventAdmin::new(bus).into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    EventAdminServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn admin_tails_lists_and_replays(kind: BusKind) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let mut client = serve(bus.clone()).await;

    let mut tail = client
        .tail_events(pb::TailEventsRequest {
            subject_filter: "ordermesh.orders.v1.created".into(),
        })
        .await
        .expect("tail")
        .into_inner();
    let wanted = Event::new("/ordermesh/test", &order_created("o-1"), None);
    bus.publish(&Event::new("/ordermesh/test", &order_confirmed("o-1"), None))
        .await
        .expect("publish");
    bus.publish(&wanted).await.expect("publish");
    let first = tokio::time::timeout(SHORT, tail.next())
        .await
        .expect("an event within the deadline")
        .expect("stream open")
        .expect("event");
    let event = Event::from_pb(first.event.expect("event"));
    assert_eq!(event.id, wanted.id, "the filter skips the confirmed event");
    assert_eq!(
        event.decode::<pb::OrderCreated>().expect("decodes").order_id,
        "o-1"
    );

    let bad = client
        .tail_events(pb::TailEventsRequest {
            subject_filter: "ordermesh..x".into(),
        })
        .await
        .expect_err("invalid filter");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("subject_filter"), "{}", bad.message());

    // Two dead letters, from a consumer that refuses everything.
    let mut config = ConsumerConfig::new("refuser", BoundedContext::Orders);
    config.ack_wait = Duration::from_secs(5);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker::run(bus.clone(), config, AlwaysFails, async move {
        let _ = stopped.await;
    }));
    eventually(SHORT, "both published events are dead letters", || async {
        bus.dead_letters(0, 10).await.expect("list").len() == 2
    })
    .await;
    let page = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.dead_letters.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let first = page.dead_letters[0].clone();
    assert_eq!(first.consumer, "refuser");
    assert!(first.error.contains("rejected by the test"), "{}", first.error);
    let rest = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(rest.dead_letters.len(), 1);
    assert!(rest.next_page_token.is_empty(), "last page");
    assert_ne!(rest.dead_letters[0].dead_letter_id, first.dead_letter_id);

    stop.send(()).expect("worker runs");
    task.await.expect("worker task").expect("worker ends");
    let replayed = client
        .replay_dead_letter(pb::ReplayDeadLetterRequest {
            dead_letter_id: first.dead_letter_id.clone(),
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        replayed.dead_letter.expect("dead letter").dead_letter_id,
        first.dead_letter_id
    );
    let left = client
        .list_dead_letters(pb::ListDeadLettersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(left.dead_letters.len(), 1, "the replayed one is gone");

    for (id, code, field) in [
        ("abc", Code::InvalidArgument, "dead_letter_id"),
        ("999999", Code::NotFound, "999999"),
    ] {
        let status = client
            .replay_dead_letter(pb::ReplayDeadLetterRequest {
                dead_letter_id: id.into(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
        assert!(status.message().contains(field), "{}", status.message());
    }
    let status = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("negative page size");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_size"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_on_the_in_process_broker() {
    admin_tails_lists_and_replays(BusKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_on_jetstream() {
    admin_tails_lists_and_replays(BusKind::Nats).await;
}
