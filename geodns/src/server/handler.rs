//! [`Handler`]: hickory's request handler, the one answer function for UDP and TCP. It reads
//! the question and the client address (EDNS Client Subnet or the resolver's own), asks the
//! zones, chooses the POPs of a geo name, writes the ECS scope the answer holds for, and counts
//! the query.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{LowerName, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::State;
use crate::badinput::BadInputLog;
use crate::config::GeoDnsConfig;
use crate::health::Health;
use crate::metrics::{Metrics, QueryLabels};
use crate::select::{self, Candidate};
use crate::zone::{Answer, GeoTarget};

/// Where an answer's client location came from, for the ECS scope.
struct Chosen {
    addrs: Vec<IpAddr>,
    first_pop: Option<String>,
    /// Prefix length the answer is valid for (RFC 7871 SCOPE PREFIX-LENGTH).
    scope: Option<u8>,
}

/// hickory's request handler: one answer function for UDP and TCP.
pub struct Handler {
    state: Arc<ArcSwap<State>>,
    health: Health,
    metrics: Arc<Metrics>,
    /// Last time (unix seconds) a fail-open answer was logged, so a POP outage does not log
    /// once per query.
    failed_open_logged: AtomicU64,
    /// Bad queries, logged rate-limited per client.
    bad_input: BadInputLog,
}

impl Handler {
    pub(super) fn new(state: Arc<ArcSwap<State>>, health: Health, metrics: Arc<Metrics>) -> Self {
        Self {
            state,
            health,
            metrics,
            failed_open_logged: AtomicU64::new(0),
            bad_input: BadInputLog::default(),
        }
    }

    fn choose(
        &self,
        state: &State,
        target: &GeoTarget,
        rtype: RecordType,
        client: IpAddr,
    ) -> Chosen {
        let health = self.health.load();
        let pops = &state.config.pops;
        let allowed = |name: &str| target.pops.is_empty() || target.pops.iter().any(|p| p == name);
        if let Some(o) = state.config.override_for(client)
            && allowed(&o.pop)
            && health.is_healthy(&o.pop)
            && let Some(pop) = pops.iter().find(|p| p.name == o.pop)
        {
            return Chosen {
                addrs: addresses(pop, rtype),
                first_pop: Some(pop.name.clone()),
                scope: Some(o.cidr.prefix_len()),
            };
        }
        let location = state.geo.lookup(client);
        let candidates: Vec<Candidate> = pops
            .iter()
            .enumerate()
            .filter(|(_, p)| allowed(&p.name))
            .map(|(index, p)| Candidate {
                index,
                lat: p.latitude,
                lon: p.longitude,
                weight: p.weight,
                healthy: health.is_healthy(&p.name),
            })
            .collect();
        let from = location.as_ref().and_then(|l| l.coords);
        let selection = select::nearest(&candidates, from, target.answers, &state.default_order);
        if selection.failed_open {
            self.metrics.failed_open.inc();
            crate::udp::note_failed_open();
            self.log_failed_open(&target.name);
        }
        let addrs = selection
            .indices
            .iter()
            .flat_map(|&i| addresses(&pops[i], rtype))
            .collect();
        Chosen {
            addrs,
            first_pop: selection.indices.first().map(|&i| pops[i].name.clone()),
            scope: location.map(|l| l.prefix_len),
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn bad_input(&self) -> &BadInputLog {
        &self.bad_input
    }

    /// A cached fail-open answer was served again: count and (rate-limited) log it.
    pub(crate) fn failed_open_again(&self, name: &str) {
        self.metrics.failed_open.inc();
        self.log_failed_open(&name);
    }

    /// Takes the name as `Display` so nothing is formatted unless the line is written.
    fn log_failed_open(&self, name: &dyn std::fmt::Display) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.failed_open_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .failed_open_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(name = %name, "no POP is healthy: answering with all of them (fail open)");
        }
    }
}

fn addresses(pop: &crate::config::PopConfig, rtype: RecordType) -> Vec<IpAddr> {
    match rtype {
        RecordType::A => pop.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
        RecordType::AAAA => pop.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
        _ => Vec::new(),
    }
}

/// The client address to locate, from EDNS Client Subnet or the resolver's own address.
enum Client {
    Subnet(ClientSubnet),
    Resolver(IpAddr),
    /// An ECS option whose prefix is longer than its address family allows (RFC 7871 7.1.2).
    Invalid,
}

fn client_of(request: &Request) -> Client {
    let subnet = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(cs) => Some(*cs),
            _ => None,
        });
    let resolver = request.src().ip();
    match subnet {
        Some(cs) => {
            let max = if cs.addr().is_ipv4() { 32 } else { 128 };
            if cs.source_prefix() > max || cs.scope_prefix() != 0 {
                Client::Invalid
            } else if cs.source_prefix() == 0 {
                // The resolver asks us not to use any client address information.
                Client::Resolver(resolver)
            } else {
                Client::Subnet(cs)
            }
        }
        None => Client::Resolver(resolver),
    }
}

/// The question and the address to locate, or the response code for a request this server
/// does not answer: NOTIMP for another opcode, FORMERR for other than one question or a
/// malformed ECS option.
fn question(request: &Request, client: &Client) -> Result<(LowerQuery, IpAddr), ResponseCode> {
    let query = match request.request_info() {
        Ok(info) if request.metadata.op_code == OpCode::Query => info.query.clone(),
        Ok(_) => return Err(ResponseCode::NotImp),
        Err(_) => return Err(ResponseCode::FormErr),
    };
    match client {
        // An ECS prefix longer than its family allows is malformed (RFC 7871 7.1.2).
        Client::Invalid => Err(ResponseCode::FormErr),
        Client::Subnet(cs) => Ok((query, cs.addr())),
        Client::Resolver(ip) => Ok((query, *ip)),
    }
}

/// The OPT record of a response to a request with EDNS: the request's payload, clamped to
/// 512 bytes and the configured maximum.
fn response_edns(request: &Edns, max_udp: u16) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(request.max_payload().clamp(512, max_udp));
    e
}

/// The ECS option of a response: the client's subnet and the scope the answer holds for.
fn answer_subnet(cs: &ClientSubnet, chosen: Option<&Chosen>) -> EdnsOption {
    // A geo answer holds for the database network it came from; anything else holds
    // for every client (scope 0), which lets resolvers cache it once.
    // A geo answer for an address the database does not know holds for the client's
    // whole source network: never scope 0, which would let a resolver hand the
    // fallback POP to all its clients.
    let scope = match chosen {
        Some(c) => c.scope.unwrap_or(cs.source_prefix()),
        None => 0,
    };
    EdnsOption::Subnet(ClientSubnet::new(cs.addr(), cs.source_prefix(), scope))
}

/// An [`Answer`] as a response code and message sections.
struct Sections {
    code: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
    /// An authoritative answer, whose name the query metrics show (the names of REFUSED and
    /// NXDOMAIN answers come from clients and are counted as `-`).
    known: bool,
}

impl From<Answer> for Sections {
    fn from(answer: Answer) -> Self {
        let (code, answers, authority, additionals, known) = match answer {
            Answer::Refused => (ResponseCode::Refused, vec![], vec![], vec![], false),
            Answer::NxDomain { authority } => {
                (ResponseCode::NXDomain, vec![], authority, vec![], false)
            }
            Answer::Authoritative {
                answers,
                authority,
                additionals,
                ..
            } => (ResponseCode::NoError, answers, authority, additionals, true),
        };
        Self {
            code,
            answers,
            authority,
            additionals,
            known,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    /// Reads the question and the client, answers from the zones, sets the ECS scope, counts
    /// the query and sends the response.
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let state = self.state.load();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let max_udp = state.config.listen.max_udp_payload;
        let mut edns = request.edns.as_ref().map(|req| response_edns(req, max_udp));
        let client = client_of(request);
        let (query, locate) = match question(request, &client) {
            Ok(found) => found,
            Err(code) => {
                if code == ResponseCode::FormErr {
                    self.note_form_error(request, &client);
                }
                return self
                    .error(request, builder, edns, code, response_handle)
                    .await;
            }
        };
        let qname: &LowerName = query.name();
        let qtype = query.query_type();
        let (answer, chosen) = self.answer(&state, qname, qtype, locate);
        let sections = Sections::from(answer);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = sections.code;
        meta.authoritative = sections.code != ResponseCode::Refused;
        if let (Some(e), Client::Subnet(cs)) = (edns.as_mut(), &client) {
            e.options_mut().insert(answer_subnet(cs, chosen.as_ref()));
        }
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            meta,
            sections.answers.iter(),
            sections.authority.iter(),
            std::iter::empty::<&Record>(),
            sections.additionals.iter(),
        );
        let pop = chosen
            .and_then(|c| c.first_pop)
            .unwrap_or_else(|| "-".into());
        self.count(
            qname,
            sections.known,
            qtype,
            sections.code,
            pop,
            &state.config,
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send DNS response");
                failed(meta)
            }
        }
    }
}

impl Handler {
    /// The zones' answer, and the POPs chosen if a geo name was answered.
    fn answer(
        &self,
        state: &State,
        qname: &LowerName,
        qtype: RecordType,
        locate: IpAddr,
    ) -> (Answer, Option<Chosen>) {
        let mut chosen: Option<Chosen> = None;
        let answer = state.zones.answer(qname, qtype, &mut |target, rtype| {
            let c = self.choose(state, target, rtype, locate);
            let addrs = c.addrs.clone();
            chosen = Some(c);
            addrs
        });
        (answer, chosen)
    }

    /// Logs (rate-limited per client) why a request gets FORMERR.
    fn note_form_error(&self, request: &Request, client: &Client) {
        let reason = match client {
            Client::Invalid => {
                "ECS source prefix longer than its address family or scope prefix set"
            }
            _ => "not exactly one question",
        };
        self.bad_input
            .note(request.src().ip(), request.protocol(), &reason);
    }

    async fn error<R: ResponseHandler>(
        &self,
        request: &Request,
        mut builder: MessageResponseBuilder<'_>,
        edns: Option<Edns>,
        code: ResponseCode,
        mut response_handle: R,
    ) -> ResponseInfo {
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.error_msg(&request.metadata, code);
        self.metrics
            .queries
            .get_or_create(&QueryLabels {
                name: "-".into(),
                qtype: "-".into(),
                rcode: code.to_string(),
                pop: "-".into(),
            })
            .inc();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = code;
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => failed(meta),
        }
    }

    fn count(
        &self,
        qname: &LowerName,
        known: bool,
        qtype: RecordType,
        code: ResponseCode,
        pop: String,
        config: &GeoDnsConfig,
    ) {
        let name = if known { qname.to_string() } else { "-".into() };
        if config.log.query_log {
            tracing::info!(target: "query", %name, %qtype, rcode = %code, %pop);
        }
        let counter = self
            .metrics
            .queries
            .get_or_create(&QueryLabels {
                name,
                qtype: qtype.to_string(),
                rcode: code.to_string(),
                pop,
            })
            .clone();
        counter.inc();
        crate::udp::note_outcome(counter);
    }
}

fn failed(metadata: Metadata) -> ResponseInfo {
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .into()
}
