//! `ordermesh events`: watch the domain events and handle dead letters.
//!
//! Two ways in, the same output: with `--nats-url` (or `ORDERMESH_NATS_URL`)
//! the command reads JetStream directly; otherwise it asks a running mesh's
//! `EventAdminService` at `--url` (the order port of `ordermesh up` by
//! default), which is the only way into the in-process broker. Every event
//! prints as one JSON object per line, its payload decoded by `ce-type`.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

use ordermesh_events::json::event_json;
use ordermesh_events::{Bus, BusSettings, DeadLetter, Event};
use ordermesh_proto::events::v1 as pb;
use ordermesh_proto::events::v1::event_admin_service_client::EventAdminServiceClient;

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// A running ordermesh process serving EventAdminService (used without --nats-url).
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    pub url: String,
    /// Read NATS JetStream directly, e.g. nats://127.0.0.1:4222.
    #[arg(long, global = true, env = "ORDERMESH_NATS_URL")]
    pub nats_url: Option<String>,
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are published, one JSON object per line, until Ctrl-C.
    Tail {
        /// NATS subject filter, e.g. 'ordermesh.orders.v1.>' (default: every event).
        subject_filter: Option<String>,
    },
    /// Dead letters: events a consumer gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Print every dead letter, oldest first, one JSON object per line.
    List,
    /// Give a dead letter's event again to the consumer that gave up on it (only), and remove it.
    Replay {
        /// The deadLetterId printed by `dlq list`.
        id: String,
    },
}

enum Source {
    Admin(EventAdminServiceClient<Channel>),
    Nats(Bus),
}

impl Source {
    async fn open(args: &EventsArgs) -> anyhow::Result<Self> {
        match args.nats_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let bus = Bus::connect(url, BusSettings::default())
                    .await
                    .with_context(|| format!("NATS at {url} (--nats-url / ORDERMESH_NATS_URL)"))?;
                Ok(Source::Nats(bus))
            }
            None => {
                let client = EventAdminServiceClient::connect(args.url.clone())
                    .await
                    .with_context(|| format!("no ordermesh at {} (--url)", args.url))?;
                Ok(Source::Admin(client))
            }
        }
    }
}

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let source = Source::open(&args).await?;
    match args.command {
        EventsCommand::Tail { subject_filter } => tail(source, subject_filter.unwrap_or_default()).await,
        EventsCommand::Dlq {
            command: DlqCommand::List,
        } => list(source).await,
        EventsCommand::Dlq {
            command: DlqCommand::Replay { id },
        } => replay(source, &id).await,
    }
}

fn print(value: &Value) {
    println!("{value}");
}

async fn tail(source: Source, filter: String) -> anyhow::Result<()> {
    let mut events = match source {
        Source::Nats(bus) => bus
            .tail(&filter)
            .await
            .context("tail JetStream")?
            .map(|item| item.map_err(anyhow::Error::from))
            .boxed(),
        Source::Admin(mut client) => client
            .tail_events(pb::TailEventsRequest {
                subject_filter: filter,
            })
            .await
            .map_err(|s| anyhow::anyhow!("TailEvents: {}", s.message()))?
            .into_inner()
            .map(|item| match item {
                Ok(response) => Ok(Event::from_pb(response.event.unwrap_or_default())),
                Err(status) => Err(anyhow::anyhow!("TailEvents: {}", status.message())),
            })
            .boxed(),
    };
    while let Some(event) = events.next().await {
        let event = event?;
        print(&event_json(&event));
    }
    anyhow::bail!("the event tail ended (the server closed it)")
}

/// One dead letter as JSON: its event as `events tail` prints events, or,
/// for a message that never was an event, `"event": null` with the reason
/// and the message as it came (nothing made up).
fn dead_letter_json(dead: &DeadLetter) -> Value {
    let mut object = json!({
        "deadLetterId": dead.id.to_string(),
        "consumer": dead.consumer,
        "error": dead.error,
        "deliveries": dead.deliveries,
        "time": ordermesh_events::envelope::rfc3339(dead.time_us),
    });
    match &dead.event {
        Ok(event) => object["event"] = event_json(event),
        Err(malformed) => {
            object["event"] = Value::Null;
            object["envelopeError"] = json!(malformed.reason);
            let headers: serde_json::Map<String, Value> = malformed
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            object["message"] = json!({
                "topic": malformed.topic,
                "headers": headers,
                "dataBase64": BASE64.encode(&malformed.data),
            });
        }
    }
    object
}

fn dead_letter_of_pb(dead: pb::DeadLetter) -> anyhow::Result<DeadLetter> {
    DeadLetter::from_pb(dead).context("dead letter from the server")
}

async fn list(source: Source) -> anyhow::Result<()> {
    match source {
        Source::Nats(bus) => {
            let mut after = 0;
            loop {
                let page = bus.dead_letters(after, 500).await.context("list dead letters")?;
                let Some(last) = page.last() else { break };
                after = last.id;
                page.iter().for_each(|d| print(&dead_letter_json(d)));
            }
        }
        Source::Admin(mut client) => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_dead_letters(pb::ListDeadLettersRequest {
                        page_size: 500,
                        page_token,
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("ListDeadLetters: {}", s.message()))?
                    .into_inner();
                for dead in page.dead_letters {
                    print(&dead_letter_json(&dead_letter_of_pb(dead)?));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}

async fn replay(source: Source, id: &str) -> anyhow::Result<()> {
    let replayed = match source {
        Source::Nats(bus) => {
            let id: u64 = id
                .parse()
                .with_context(|| format!("dead letter id {id:?} is not a number from `dlq list`"))?;
            bus.replay(id).await.context("replay")?
        }
        Source::Admin(mut client) => {
            let response = client
                .replay_dead_letter(pb::ReplayDeadLetterRequest {
                    dead_letter_id: id.to_owned(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("ReplayDeadLetter: {}", s.message()))?
                .into_inner();
            dead_letter_of_pb(response.dead_letter.unwrap_or_default())?
        }
    };
    print(&json!({"replayed": dead_letter_json(&replayed)}));
    Ok(())
}
