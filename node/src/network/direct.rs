//! `/proofmesh/direct/3`: direct requests on one long-lived stream per connection and direction,
//! instead of a stream per request.
//!
//! With libp2p's request-response every direct message (an assignment and the acceptance
//! answering it, a result, an input push) opened a yamux stream, negotiated it, armed a timeout timer and closed
//! it again: a window-update, data and close frame each way, each its own encryption and often
//! its own `sendto`, and a wakeup of the `futures_timer` thread per request. Together that was
//! about a fifth of a busy node's CPU (bench/node-runtime.md). Here a connection carries our
//! requests on one stream we open (the answers come back on it) and the peer's on one it opens:
//! a request and its answer are one frame each way. Frames on a stream keep their order, so
//! messages to a peer arrive in the order they were sent.
//!
//! Frame: u32 big-endian length of the rest, u64 big-endian request id, payload. Timeouts are
//! swept twice a second by the behaviour, not timed per request.
//!
//! A request read is taken in on the connection's own task ([`Intake`]: checked and handed
//! straight to the node), and its answer is written back by that task: neither crosses the
//! swarm's one task, which every connection's traffic would otherwise queue behind.

use asynchronous_codec::{Decoder, Encoder, Framed};
use bytes::{Buf, BufMut, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, DialError,
    FromSwarm, NetworkBehaviour, NotifyHandler, Stream, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The protocol name (version 3: streams that carry many requests).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/proofmesh/direct/3");

/// Streams a peer may have open to us on one connection (normally one).
const MAX_INBOUND_STREAMS: usize = 4;

/// Requests read from one stream and not answered yet, past which it is not read until some
/// are: the peer then waits on the stream's flow control, and a flood costs it, not us.
const MAX_UNANSWERED: usize = 256;

/// Requests read per stream in one poll, after which the task yields (and polls again) so that
/// a peer's burst does not hold the connection's other protocols back.
const READS_PER_POLL: usize = 32;

/// How often expired requests are failed.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Frame overhead: the request id.
const ID_BYTES: usize = 8;

/// Identifies an outbound request until its answer or failure.
pub(crate) type RequestId = u64;

/// Takes in each request read from `peer`, on the connection's own task: the node checks it
/// (a relayed envelope's signature included), so requests from many peers are checked in
/// parallel, and hands it to its core.
pub(crate) type Intake = std::sync::Arc<dyn Fn(PeerId, Vec<u8>) -> Taken + Send + Sync>;

/// What the node made of a request.
pub(crate) enum Taken {
    /// The answer, at once (a refusal).
    Answer(Vec<u8>),
    /// Handed to the node; `answer` resolves to the answer's bytes. With `queued`, the node's
    /// queue was full: the request goes in once it resolves, and the connection reads no
    /// further request meanwhile (the peer then waits on the stream's flow control).
    Later {
        queued: Option<BoxFuture<'static, ()>>,
        answer: BoxFuture<'static, Vec<u8>>,
    },
}

/// What the behaviour reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// The answer to one of our requests.
    Response { id: RequestId, response: Vec<u8> },
    /// One of our requests got no answer: `error` says why.
    OutboundFailure { id: RequestId, error: String },
    /// A peer's stream failed (malformed or oversized frame, reset).
    InboundFailure { peer: PeerId, error: String },
}

struct Pending {
    peer: PeerId,
    connection: Option<ConnectionId>,
    deadline: Instant,
}

/// The direct-request behaviour.
pub(crate) struct Behaviour {
    max_request: usize,
    max_response: usize,
    timeout: Duration,
    next_id: RequestId,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Requests to peers not connected, waiting for the dial.
    dialing: HashMap<PeerId, Vec<(RequestId, Vec<u8>)>>,
    pending: HashMap<RequestId, Pending>,
    events: VecDeque<ToSwarm<Event, FromBehaviour>>,
    sweep: Option<tokio::time::Interval>,
    intake: Intake,
}

impl Behaviour {
    /// Requests up to `max_request` bytes, answers up to `max_response`, each failed after
    /// `timeout` without an answer; each request read goes to `intake`.
    pub(crate) fn new(
        max_request: usize,
        max_response: usize,
        timeout: Duration,
        intake: Intake,
    ) -> Self {
        Behaviour {
            max_request,
            max_response,
            timeout,
            next_id: 0,
            connections: HashMap::new(),
            dialing: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
            sweep: None,
            intake,
        }
    }

    /// Send `data` to `peer` (dialing it if not connected); the answer or failure comes as an
    /// event with the returned id.
    pub(crate) fn send_request(&mut self, peer: &PeerId, data: Vec<u8>) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let connection = self.connections.get(peer).and_then(|c| c.first()).copied();
        self.pending.insert(
            id,
            Pending {
                peer: *peer,
                connection,
                deadline: Instant::now() + self.timeout,
            },
        );
        match connection {
            Some(connection) => self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: *peer,
                handler: NotifyHandler::One(connection),
                event: FromBehaviour::Send { id, data },
            }),
            None => {
                let queued = self.dialing.entry(*peer).or_default();
                if queued.is_empty() {
                    self.events.push_back(ToSwarm::Dial {
                        opts: DialOpts::peer_id(*peer)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build(),
                    });
                }
                queued.push((id, data));
            }
        }
        id
    }

    fn fail(&mut self, id: RequestId, error: String) {
        if self.pending.remove(&id).is_some() {
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::OutboundFailure { id, error }));
        }
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler::new(
            self.max_request,
            self.max_response,
            peer,
            self.intake.clone(),
        )
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .push(e.connection_id);
                for (id, data) in self.dialing.remove(&e.peer_id).unwrap_or_default() {
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.connection = Some(e.connection_id);
                        self.events.push_back(ToSwarm::NotifyHandler {
                            peer_id: e.peer_id,
                            handler: NotifyHandler::One(e.connection_id),
                            event: FromBehaviour::Send { id, data },
                        });
                    }
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(c) = self.connections.get_mut(&e.peer_id) {
                    c.retain(|c| *c != e.connection_id);
                    if c.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
                let lost: Vec<RequestId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.connection == Some(e.connection_id))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    self.fail(id, "the connection closed before the answer".into());
                }
            }
            FromSwarm::DialFailure(e) => {
                let Some(peer) = e.peer_id else { return };
                // Not dialed because a connection is being made already: wait for it (or for
                // the timeout).
                if self.connections.contains_key(&peer)
                    || matches!(e.error, DialError::DialPeerConditionFalse(_))
                {
                    return;
                }
                let error = format!("dial failed: {}", e.error);
                for (id, _) in self.dialing.remove(&peer).unwrap_or_default() {
                    self.fail(id, error.clone());
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            ToBehaviour::Response { id, data } => {
                if self.pending.remove(&id).is_some() {
                    self.events
                        .push_back(ToSwarm::GenerateEvent(Event::Response {
                            id,
                            response: data,
                        }));
                }
            }
            ToBehaviour::OutboundFailed { ids, error } => {
                for id in ids {
                    self.fail(id, error.clone());
                }
            }
            ToBehaviour::InboundFailed { error } => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::InboundFailure {
                        peer,
                        error,
                    }))
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        if !self.pending.is_empty() {
            let sweep = self.sweep.get_or_insert_with(|| {
                let mut i = tokio::time::interval(SWEEP_EVERY);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            if sweep.poll_tick(cx).is_ready() {
                let now = Instant::now();
                let expired: Vec<RequestId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in expired {
                    if let Some(p) = self.pending.get(&id) {
                        let peer = p.peer;
                        match p.connection {
                            // The handler stops waiting for it too.
                            Some(connection) => self.events.push_back(ToSwarm::NotifyHandler {
                                peer_id: peer,
                                handler: NotifyHandler::One(connection),
                                event: FromBehaviour::Forget { id },
                            }),
                            None => {
                                if let Some(queued) = self.dialing.get_mut(&peer) {
                                    queued.retain(|(q, _)| *q != id);
                                }
                            }
                        }
                    }
                    self.fail(id, format!("no answer within {:?} (timeout)", self.timeout));
                }
                if let Some(event) = self.events.pop_front() {
                    return Poll::Ready(event);
                }
            }
        }
        Poll::Pending
    }
}

/// From the behaviour to a connection's handler.
#[derive(Debug)]
pub(crate) enum FromBehaviour {
    Send {
        id: RequestId,
        data: Vec<u8>,
    },
    /// A request timed out: no longer waited for (nor sent, if still queued).
    Forget {
        id: RequestId,
    },
}

/// From a connection's handler to the behaviour.
#[derive(Debug)]
pub(crate) enum ToBehaviour {
    Response { id: RequestId, data: Vec<u8> },
    OutboundFailed { ids: Vec<RequestId>, error: String },
    InboundFailed { error: String },
}

/// A peer's stream of requests to us, and our answers waiting to go back on it.
struct Inbound {
    framed: Framed<Stream, FrameCodec>,
    answers: VecDeque<(RequestId, Vec<u8>)>,
    unanswered: usize,
}

/// One connection's direct streams.
pub(crate) struct Handler {
    max_request: usize,
    max_response: usize,
    /// Our stream: requests out, their answers in.
    outbound: Option<Framed<Stream, FrameCodec>>,
    outbound_requested: bool,
    /// Requests not written yet.
    queue: VecDeque<(RequestId, Vec<u8>)>,
    /// Requests written and not answered: failed with the stream.
    in_flight: HashSet<RequestId>,
    inbound: HashMap<u64, Inbound>,
    next_stream: u64,
    events: VecDeque<ToBehaviour>,
    peer: PeerId,
    intake: Intake,
    /// Answers the node has yet to give: each resolves to its stream, request id and bytes.
    answering: FuturesUnordered<BoxFuture<'static, (u64, RequestId, Vec<u8>)>>,
    /// A request waiting for room in the node's queue; no request is read until it is in.
    queued: Option<BoxFuture<'static, ()>>,
}

impl Handler {
    fn new(max_request: usize, max_response: usize, peer: PeerId, intake: Intake) -> Self {
        Handler {
            max_request,
            max_response,
            outbound: None,
            outbound_requested: false,
            queue: VecDeque::new(),
            in_flight: HashSet::new(),
            inbound: HashMap::new(),
            next_stream: 0,
            events: VecDeque::new(),
            peer,
            intake,
            answering: FuturesUnordered::new(),
            queued: None,
        }
    }

    /// Our stream failed: what was written on it gets no answer (the behaviour fails those);
    /// what is queued goes out on the next stream.
    fn outbound_failed(&mut self, error: String) {
        self.outbound = None;
        self.outbound_requested = false;
        if !self.in_flight.is_empty() {
            self.events.push_back(ToBehaviour::OutboundFailed {
                ids: self.in_flight.drain().collect(),
                error,
            });
        }
    }

    /// Write what is queued on our stream and read answers; `Some` for an event.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> Option<ToBehaviour> {
        let framed = self.outbound.as_mut()?;
        let in_flight = &mut self.in_flight;
        let mut failed = write_queued(framed, &mut self.queue, cx, |id| {
            in_flight.insert(id);
        })
        .err();
        if failed.is_none() {
            match framed.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok((id, data)))) => {
                    if self.in_flight.remove(&id) {
                        return Some(ToBehaviour::Response { id, data });
                    }
                    // An answer to nothing we asked: ignored (a peer confused, not hostile).
                    cx.waker().wake_by_ref();
                }
                Poll::Ready(Some(Err(e))) => failed = Some(e.to_string()),
                Poll::Ready(None) => failed = Some("the peer closed the stream".into()),
                Poll::Pending => {}
            }
        }
        if let Some(error) = failed {
            self.outbound_failed(error);
            return self.events.pop_front();
        }
        None
    }

    /// Take in the node's answers, read requests from the peer's streams (each handed to the
    /// intake) and write the answers back; `Some` for an event.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Option<ToBehaviour> {
        self.take_answers(cx);
        if let Some(queued) = &mut self.queued {
            if queued.poll_unpin(cx).is_ready() {
                self.queued = None;
            }
        }
        let mut closed = Vec::new();
        for (&index, s) in self.inbound.iter_mut() {
            let mut failed = None;
            let mut reads = 0;
            while self.queued.is_none() && s.unanswered < MAX_UNANSWERED {
                if reads == READS_PER_POLL {
                    cx.waker().wake_by_ref();
                    break;
                }
                reads += 1;
                match s.framed.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok((id, data)))) => match (self.intake)(self.peer, data) {
                        Taken::Answer(bytes) => s.answers.push_back((id, bytes)),
                        Taken::Later { queued, answer } => {
                            s.unanswered += 1;
                            self.answering
                                .push(answer.map(move |bytes| (index, id, bytes)).boxed());
                            if let Some(mut queued) = queued {
                                // Polled here so that it wakes this task once in.
                                if queued.poll_unpin(cx).is_pending() {
                                    self.queued = Some(queued);
                                }
                            }
                        }
                    },
                    Poll::Ready(Some(Err(e))) => {
                        failed = Some(e.to_string());
                        break;
                    }
                    Poll::Ready(None) => {
                        closed.push(index); // the peer is done with it
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if failed.is_none() {
                failed = write_queued(&mut s.framed, &mut s.answers, cx, |_| {}).err();
            }
            if let Some(error) = failed {
                closed.push(index);
                self.events.push_back(ToBehaviour::InboundFailed { error });
            }
        }
        for index in closed {
            self.inbound.remove(&index);
        }
        // Answers handed over above are polled once here, which registers their wake-ups; one
        // given already is written on the next poll.
        if self.take_answers(cx) {
            cx.waker().wake_by_ref();
        }
        self.events.pop_front()
    }

    /// Queue the answers the node has given on their streams; whether there were any.
    fn take_answers(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        while let Poll::Ready(Some((stream, id, bytes))) = self.answering.poll_next_unpin(cx) {
            any = true;
            // A stream gone meanwhile: the peer failed that request already.
            if let Some(s) = self.inbound.get_mut(&stream) {
                s.unanswered = s.unanswered.saturating_sub(1);
                s.answers.push_back((id, bytes));
            }
        }
        any
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = FromBehaviour;
    type ToBehaviour = ToBehaviour;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        !self.queue.is_empty()
            || !self.in_flight.is_empty()
            || !self.answering.is_empty()
            || self.queued.is_some()
            || self.inbound.values().any(|s| !s.answers.is_empty())
    }

    fn on_behaviour_event(&mut self, event: FromBehaviour) {
        match event {
            FromBehaviour::Send { id, data } => self.queue.push_back((id, data)),
            FromBehaviour::Forget { id } => {
                self.in_flight.remove(&id);
                self.queue.retain(|(q, _)| *q != id);
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), ToBehaviour>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if self.outbound.is_none() && !self.queue.is_empty() && !self.outbound_requested {
            self.outbound_requested = true;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()),
            });
        }
        if let Some(event) = self.poll_outbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if let Some(event) = self.poll_inbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                if self.inbound.len() >= MAX_INBOUND_STREAMS {
                    self.events.push_back(ToBehaviour::InboundFailed {
                        error: format!(
                            "more than {MAX_INBOUND_STREAMS} direct streams on one connection"
                        ),
                    });
                    return; // dropped: the stream is reset
                }
                let index = self.next_stream;
                self.next_stream += 1;
                self.inbound.insert(
                    index,
                    Inbound {
                        framed: Framed::new(stream, FrameCodec::new(self.max_request)),
                        answers: VecDeque::new(),
                        unanswered: 0,
                    },
                );
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.outbound = Some(Framed::new(stream, FrameCodec::new(self.max_response)));
            }
            ConnectionEvent::DialUpgradeError(e) => {
                // The peer does not speak the protocol (or the stream failed to open): what
                // waits for this connection fails now, not at its timeout.
                self.outbound_requested = false;
                let mut ids: Vec<RequestId> = self.queue.drain(..).map(|(id, _)| id).collect();
                ids.extend(self.in_flight.drain());
                self.events.push_back(ToBehaviour::OutboundFailed {
                    ids,
                    error: format!("cannot open a direct stream: {}", e.error),
                });
            }
            _ => {}
        }
    }
}

/// Write the frames `queue` holds while the stream takes them (calling `sent` with each id
/// handed over), then flush; `Err` says why the stream failed.
fn write_queued(
    framed: &mut Framed<Stream, FrameCodec>,
    queue: &mut VecDeque<(RequestId, Vec<u8>)>,
    cx: &mut Context<'_>,
    mut sent: impl FnMut(RequestId),
) -> Result<(), String> {
    while !queue.is_empty() {
        match framed.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let (id, data) = queue.pop_front().expect("not empty");
                framed
                    .start_send_unpin((id, data))
                    .map_err(|e| e.to_string())?;
                sent(id);
            }
            Poll::Ready(Err(e)) => return Err(e.to_string()),
            Poll::Pending => break,
        }
    }
    match framed.poll_flush_unpin(cx) {
        Poll::Ready(Err(e)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// Length-prefixed frames of a request id and a payload, the payload at most `max` bytes when
/// read (what we write was checked against its limit when it was made).
struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    fn new(max: usize) -> Self {
        FrameCodec { max }
    }
}

impl Encoder for FrameCodec {
    type Item<'a> = (RequestId, Vec<u8>);
    type Error = io::Error;

    fn encode(&mut self, (id, data): Self::Item<'_>, dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(ID_BYTES + data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        dst.reserve(4 + len as usize);
        dst.put_u32(len);
        dst.put_u64(id);
        dst.put_slice(&data);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = (RequestId, Vec<u8>);
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(src[..4].try_into().expect("4 bytes")) as usize;
        if len < ID_BYTES || len - ID_BYTES > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "direct frame of {} bytes exceeds the {}-byte limit",
                    len.saturating_sub(ID_BYTES),
                    self.max
                ),
            ));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let id = src.get_u64();
        let data = src.split_to(len - ID_BYTES).to_vec();
        Ok(Some((id, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_request_is_neither_sent_nor_waited_for() {
        let intake: Intake = std::sync::Arc::new(|_, _| Taken::Answer(Vec::new()));
        let mut handler = Handler::new(16, 16, PeerId::random(), intake);
        assert!(!handler.connection_keep_alive());
        handler.on_behaviour_event(FromBehaviour::Send {
            id: 1,
            data: b"a".to_vec(),
        });
        handler.on_behaviour_event(FromBehaviour::Send {
            id: 2,
            data: b"b".to_vec(),
        });
        handler.in_flight.insert(3); // written earlier, no answer yet
        assert!(handler.connection_keep_alive());
        for id in [1, 3] {
            handler.on_behaviour_event(FromBehaviour::Forget { id });
        }
        assert_eq!(
            handler.queue.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(handler.in_flight.is_empty());
        handler.on_behaviour_event(FromBehaviour::Forget { id: 2 });
        assert!(
            !handler.connection_keep_alive(),
            "nothing left to keep the connection for"
        );
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_by_size() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        codec.encode((7, b"hello".to_vec()), &mut buf).unwrap();
        codec.encode((8, vec![1u8; 16]), &mut buf).unwrap();
        // Partial frames wait for the rest.
        let mut partial = buf.split_to(6);
        assert_eq!(codec.decode(&mut partial).unwrap(), None);
        partial.unsplit(buf);
        let mut buf = partial;
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some((7, b"hello".to_vec()))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some((8, vec![1u8; 16])));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);

        codec.encode((9, vec![0u8; 17]), &mut buf).unwrap();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            err.to_string()
                .contains("17 bytes exceeds the 16-byte limit"),
            "{err}"
        );
    }
}
