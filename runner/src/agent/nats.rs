//! The agents' broker over NATS JetStream: one work-queue stream per site with one durable pull
//! consumer the site's agents share (AckWait = the run's budget + grace, `max_deliver`), one
//! results stream with the centre's durable consumer, heartbeats on plain subjects. JetStream
//! message ids (run id for work, result id for results) drop republished messages.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::link::{
    self, AgentLink, CentreLink, LinkError, LinkSpec, Sink, WorkMessage, WorkStream,
    REQUEST_TIMEOUT,
};
use super::wire::{Names, Work, AGENTS_CONSUMER, CENTRE_CONSUMER};

/// How long work and results stay in their streams at most.
const STREAM_MAX_AGE: Duration = Duration::from_secs(86_400);
/// How the centre's user gives a CA, for error texts.
const CENTRE_CA_SETTING: &str = "[agents] ca_file";
/// How the agent's user gives a CA, for error texts.
const AGENT_CA_SETTING: &str = "--ca-file";
/// How long a diagnosis of the broker link is reused while it stays down (one connection
/// attempt per period, whatever the number of runs due).
const LINK_RECHECK: Duration = Duration::from_secs(20);

/// The centre on NATS JetStream.
pub struct NatsCentre {
    names: Names,
    js: jetstream::Context,
    client: async_nats::Client,
    /// Sites whose stream and consumer exist, with the AckWait they were made with.
    ensured: tokio::sync::Mutex<HashMap<String, Duration>>,
    /// How to connect, for diagnosing a link that is down.
    spec: LinkSpec,
    /// The last diagnosis of a link that was down (when, and a problem retrying cannot fix).
    last_problem: tokio::sync::Mutex<Option<(std::time::Instant, Option<LinkError>)>>,
}

impl NatsCentre {
    /// Connects. Settings that cannot work are an error; a broker that refuses the centre
    /// (its certificate, the password) leaves the rest of the service running, with the
    /// agent-run sites' runs UNKNOWN with the reason until it is fixed (retried meanwhile); a
    /// broker that is only down is waited for in the background.
    pub async fn connect(spec: &LinkSpec, names: Names) -> Result<NatsCentre, String> {
        let (client, problem) = match link::connect(spec, CENTRE_CA_SETTING).await {
            Ok(c) => (c, None),
            Err(e @ LinkError::Settings(_)) => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "agents' broker unusable: runs of agent-run sites are UNKNOWN until this is fixed; retrying");
                (link::connect_in_background(spec).await?, Some(e))
            }
        };
        let centre = NatsCentre::with_client(client, names, spec.clone());
        *centre.last_problem.lock().await = problem.map(|e| (std::time::Instant::now(), Some(e)));
        Ok(centre)
    }

    /// Over an existing client.
    pub fn with_client(client: async_nats::Client, names: Names, spec: LinkSpec) -> NatsCentre {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        NatsCentre {
            names,
            js,
            client,
            ensured: tokio::sync::Mutex::default(),
            spec,
            last_problem: tokio::sync::Mutex::default(),
        }
    }

    /// Makes sure the site's work-queue stream and its agents' consumer exist (with this
    /// AckWait).
    async fn ensure_site(
        &self,
        site: &str,
        ack_wait: Duration,
        max_deliver: u32,
    ) -> Result<(), String> {
        let mut ensured = self.ensured.lock().await;
        if ensured.get(site) == Some(&ack_wait) {
            return Ok(());
        }
        let stream = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.names.work_stream(site),
                subjects: vec![self.names.work_subject(site)],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                max_age: STREAM_MAX_AGE,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the work stream of {site}: {e}"))?;
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(AGENTS_CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_deliver: i64::from(max_deliver),
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the agents' consumer of {site}: {e}"))?;
        ensured.insert(site.to_string(), ack_wait);
        Ok(())
    }

    async fn results_consumer(&self) -> Result<jetstream::consumer::PullConsumer, String> {
        let stream = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.names.results_stream(),
                subjects: vec![self.names.results_filter()],
                storage: jetstream::stream::StorageType::File,
                max_age: STREAM_MAX_AGE,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the results stream: {e}"))?;
        stream
            .get_or_create_consumer(
                CENTRE_CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(CENTRE_CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("cannot create the centre's results consumer: {e}"))
    }
}

#[async_trait::async_trait]
impl CentreLink for NatsCentre {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// One direct connection attempt, its verdict reused for [`LINK_RECHECK`].
    async fn problem(&self) -> Option<String> {
        if self.connected() {
            return None;
        }
        let mut last = self.last_problem.lock().await;
        if let Some((at, problem)) = &*last {
            if at.elapsed() < LINK_RECHECK {
                return problem.as_ref().map(ToString::to_string);
            }
        }
        let problem = match link::attempt(&self.spec, CENTRE_CA_SETTING).await {
            // It works again: the client reconnects by itself shortly.
            Ok(_) => None,
            Err(e) if e.is_permanent() => Some(e),
            Err(_) => None,
        };
        let words = problem.as_ref().map(ToString::to_string);
        *last = Some((std::time::Instant::now(), problem));
        words
    }

    async fn publish_work(
        &self,
        site: &str,
        work: &Work,
        ack_wait: Duration,
        max_deliver: u32,
    ) -> Result<(), String> {
        let attempt = async {
            self.ensure_site(site, ack_wait, max_deliver).await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", work.run_id.as_str());
            let ack = self
                .js
                .publish_with_headers(
                    self.names.work_subject(site),
                    headers,
                    work.to_json().into(),
                )
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
            ack.await
                .map(|_| ())
                .map_err(|e| format!("no acknowledgement from JetStream: {e}"))
        };
        let r = match tokio::time::timeout(REQUEST_TIMEOUT.saturating_mul(2), attempt).await {
            Ok(r) => r,
            Err(_) => Err("the broker did not answer in time".into()),
        };
        if r.is_err() {
            // The broker may have lost its streams (a new server): make them again next time.
            self.ensured.lock().await.remove(site);
        }
        r
    }

    async fn follow_results(&self, sink: Sink, shutdown: CancellationToken) {
        let mut last_error = String::new();
        loop {
            let consumer = tokio::select! {
                c = self.results_consumer() => c,
                _ = shutdown.cancelled() => return,
            };
            let messages = match consumer {
                Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    if e != last_error {
                        tracing::warn!(error = %e, "cannot read agents' results; retrying");
                        last_error = e;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            if !last_error.is_empty() {
                tracing::info!("reading agents' results again");
                last_error.clear();
            }
            loop {
                tokio::select! {
                    m = messages.next() => match m {
                        Some(Ok(msg)) => {
                            sink(msg.subject.as_str(), &msg.payload);
                            // Handed over (or dropped for good): the broker may forget it.
                            if let Err(e) = msg.ack().await {
                                tracing::debug!(error = %e, "cannot acknowledge an agent result");
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "agents' results: consumer error; reconnecting");
                            break;
                        }
                        None => break,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    async fn follow_heartbeats(&self, sink: Sink, shutdown: CancellationToken) {
        loop {
            let sub = tokio::select! {
                s = self.client.subscribe(self.names.heartbeat_filter()) => s,
                _ = shutdown.cancelled() => return,
            };
            match sub {
                Ok(mut sub) => loop {
                    tokio::select! {
                        m = sub.next() => match m {
                            Some(msg) => sink(msg.subject.as_str(), &msg.payload),
                            None => break,
                        },
                        _ = shutdown.cancelled() => return,
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot follow agents' heartbeats; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// An agent on NATS JetStream.
pub struct NatsAgent {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    results_subject: String,
    heartbeat_subject: String,
}

impl NatsAgent {
    /// Connects with the site's own reply prefix. What retrying cannot fix (the broker's
    /// certificate, the password, the CA file) is an error; a broker that is only down is
    /// waited for in the background.
    pub async fn connect(spec: &LinkSpec, names: Names, site: &str) -> Result<NatsAgent, String> {
        let mut spec = spec.clone();
        spec.inbox_prefix = Some(names.agent_inbox(site));
        let client = link::connect(&spec, AGENT_CA_SETTING).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        Ok(NatsAgent {
            js,
            client,
            stream: names.work_stream(site),
            results_subject: names.results_subject(site),
            heartbeat_subject: names.heartbeat_subject(site),
        })
    }
}

#[async_trait::async_trait]
impl AgentLink for NatsAgent {
    fn work(&self) -> Box<dyn WorkStream> {
        Box::new(NatsWork {
            js: self.js.clone(),
            stream: self.stream.clone(),
            consumer: None,
            last_error: String::new(),
        })
    }

    /// Waits for JetStream's acknowledgements; the message id is the result's stable id, so a
    /// replay after a crash is dropped by JetStream's duplicate window.
    async fn publish_results(&self, messages: &[(String, Vec<u8>)]) -> Result<(), String> {
        let work = async {
            let mut acks = Vec::with_capacity(messages.len());
            for (id, body) in messages {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let ack = self
                    .js
                    .publish_with_headers(
                        self.results_subject.clone(),
                        headers,
                        body.clone().into(),
                    )
                    .await
                    .map_err(|e| format!("publish failed: {e}"))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await
                    .map_err(|e| format!("no acknowledgement from JetStream: {e}"))?;
            }
            Ok(())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT.saturating_mul(3), work).await {
            Ok(r) => r,
            Err(_) => Err("JetStream acknowledgements did not arrive in time".into()),
        }
    }

    async fn heartbeat(&self, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(self.heartbeat_subject.clone(), payload.into())
            .await
            .map_err(|e| e.to_string())
    }
}

/// A worker's pulls from the site's consumer, one message at a time.
struct NatsWork {
    js: jetstream::Context,
    stream: String,
    consumer: Option<jetstream::consumer::PullConsumer>,
    last_error: String,
}

#[async_trait::async_trait]
impl WorkStream for NatsWork {
    async fn next(&mut self, shutdown: &CancellationToken) -> Option<Box<dyn WorkMessage>> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let consumer = match &self.consumer {
                Some(c) => c.clone(),
                None => {
                    let found: Result<jetstream::consumer::PullConsumer, String> = self
                        .js
                        .get_consumer_from_stream(AGENTS_CONSUMER, &self.stream)
                        .await
                        .map_err(|e| e.to_string());
                    match found {
                        Ok(c) => {
                            self.last_error.clear();
                            self.consumer = Some(c.clone());
                            c
                        }
                        Err(e) => {
                            // The centre makes the stream with the site's first run.
                            if e != self.last_error {
                                tracing::info!(error = %e, stream = %self.stream, "waiting for the site's work queue");
                                self.last_error = e;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                                _ = shutdown.cancelled() => return None,
                            }
                        }
                    }
                }
            };
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages();
            let mut messages = tokio::select! {
                b = batch => match b {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pull work; reconnecting");
                        self.consumer = None;
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return None,
                        }
                    }
                },
                _ = shutdown.cancelled() => return None,
            };
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return None,
            };
            match next {
                Some(Ok(msg)) => return Some(Box::new(NatsMessage(msg))),
                Some(Err(e)) => tracing::debug!(error = %e, "pull ended"),
                None => {}
            }
        }
    }
}

struct NatsMessage(jetstream::Message);

#[async_trait::async_trait]
impl WorkMessage for NatsMessage {
    fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    async fn ack(&self) -> Result<(), String> {
        self.0.ack().await.map_err(|e| e.to_string())
    }

    async fn term(&self) {
        let _ = self.0.ack_with(jetstream::AckKind::Term).await;
    }

    async fn release(&self) {
        // Left to AckWait: JetStream hands it out again once the agent's time is up, and the
        // result may still be published meanwhile.
    }
}
