//! A stateful fake of Envoy's side of proxy-wasm, in the style of proxy-wasm-go-sdk's
//! `proxytest`: drive the engine, then ask what happened — which calls were dispatched (the test
//! answers them, fails them or lets them time out), which reply was sent, which headers were
//! set, which requests resumed. Two `Proxy`s on one `World` are two worker VMs of one Envoy
//! process: they share the clock and shared data (with CAS), so worker races can be played out.
//!
//! As in Envoy: a call's answer goes to the context whose callback dispatched it; a request's
//! calls are cancelled when its stream ends (its answer never comes); `enter` fails for a context
//! that is gone.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::engine;
use crate::flow::Outcome;
use crate::host::{Host, Level};
use crate::vm::VmRef;
use crate::web::Reply;

/// What the worker VMs of one Envoy process share.
#[derive(Default)]
pub struct World {
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    clock_ms: Cell<u64>,
}

impl World {
    pub fn new(now_ms: u64) -> Rc<World> {
        let w = World::default();
        w.clock_ms.set(now_ms);
        Rc::new(w)
    }

    pub fn advance(&self, ms: u64) {
        self.clock_ms.set(self.clock_ms.get() + ms);
    }

    pub fn shared_keys(&self) -> Vec<String> {
        self.shared.borrow().keys().cloned().collect()
    }
}

/// One request as Envoy holds it.
#[derive(Debug, Default, Clone)]
pub struct FakeRequest {
    pub headers: Vec<(String, Vec<u8>)>,
    pub response_status: u32,
    pub response_headers: Vec<(String, String)>,
    pub replies: Vec<Reply>,
    pub resumed: u32,
    pub tls: bool,
    pub outbound: bool,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn reply(&self) -> Option<&Reply> {
        self.replies.last()
    }
}

#[derive(Debug, Clone)]
pub struct Dispatched {
    pub token: u32,
    /// The context whose callback dispatched it: the answer goes there.
    pub to: u32,
    /// The effective context: if it is a request and its stream ends, the call is cancelled.
    pub on_behalf_of: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
    pub answered: bool,
}

impl Dispatched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }
}

pub struct FakeHost {
    world: Rc<World>,
    /// The context whose callback runs (what the SDK calls the active context).
    active: Cell<u32>,
    /// The effective context (`enter`).
    current: Cell<u32>,
    pub requests: RefCell<HashMap<u32, FakeRequest>>,
    pub dispatched: RefCell<Vec<Dispatched>>,
    next_token: Cell<u32>,
    /// The answer of the call being delivered.
    answer: RefCell<(u32, Vec<u8>)>,
    pub logs: RefCell<Vec<(Level, String)>>,
    pub counters: RefCell<Vec<(String, u64)>>,
    rng: Cell<u8>,
    /// Clusters Envoy knows (a dispatch to another one is refused).
    pub clusters: RefCell<Vec<String>>,
    /// Calls fail at once and Envoy answers them inline, inside `dispatch` (status 0): the
    /// engine is re-entered while it is dispatching, as Envoy can do.
    pub inline_failures: Cell<bool>,
    vm: RefCell<Option<std::rc::Weak<RefCell<crate::vm::Vm>>>>,
    /// Every host call, by name (and its key or header name where it has one), in order: what
    /// a request costs in VM crossings.
    pub trace: RefCell<Vec<String>>,
    /// Whether host calls are recorded in `trace`.
    pub tracing: Cell<bool>,
    /// Whether the requests that arrive from now on come over TLS.
    pub tls: Cell<bool>,
}

impl FakeHost {
    pub fn new(world: Rc<World>, first_token: u32) -> FakeHost {
        FakeHost {
            world,
            active: Cell::new(ROOT),
            current: Cell::new(ROOT),
            requests: RefCell::default(),
            dispatched: RefCell::default(),
            next_token: Cell::new(first_token),
            answer: RefCell::default(),
            logs: RefCell::default(),
            counters: RefCell::default(),
            // Each VM its own random sequence (states must differ between VMs of one world).
            rng: Cell::new(u8::try_from(first_token % 251).unwrap_or(0)),
            clusters: RefCell::new(vec![CLUSTER.to_string()]),
            inline_failures: Cell::new(false),
            vm: RefCell::new(None),
            trace: RefCell::default(),
            tracing: Cell::new(false),
            tls: Cell::new(false),
        }
    }

    fn note(&self, call: &str, arg: &str) {
        if !self.tracing.get() {
            return;
        }
        let mut t = self.trace.borrow_mut();
        if arg.is_empty() {
            t.push(call.to_string());
        } else {
            t.push(format!("{call} {arg}"));
        }
    }

    fn with_current<T>(&self, f: impl FnOnce(&mut FakeRequest) -> T) -> Option<T> {
        self.requests
            .borrow_mut()
            .get_mut(&self.current.get())
            .map(f)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    pub fn logged(&self, text: &str) -> bool {
        self.logs.borrow().iter().any(|(_, l)| l.contains(text))
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.note("now_ms", "");
        self.world.clock_ms.get()
    }

    fn log(&self, level: Level, message: &str) {
        self.note("log", "");
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        self.note("define_counter", name);
        let mut c = self.counters.borrow_mut();
        if let Some(i) = c.iter().position(|(n, _)| n == name) {
            return u32::try_from(i).ok();
        }
        c.push((name.to_string(), 0));
        u32::try_from(c.len() - 1).ok()
    }

    fn increment(&self, counter: u32) {
        self.note("increment", "");
        if let Some((_, v)) = self.counters.borrow_mut().get_mut(counter as usize) {
            *v += 1;
        }
    }

    fn request_headers(&self) -> crate::inbound::Headers {
        self.note("request_headers", "");
        self.with_current(|r| crate::inbound::Headers::from_pairs(&r.headers))
            .unwrap_or_default()
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        self.note("request_body", "");
        self.with_current(|r| {
            r.body
                .get(..size.min(r.body.len()))
                .unwrap_or_default()
                .to_vec()
        })
        .unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) {
        self.note("set_request_header", name);
        self.with_current(|r| {
            r.headers.retain(|(n, _)| n != name);
            if let Some(v) = value {
                r.headers.push((name.to_string(), v.to_vec()));
            }
        });
    }

    fn connection_is_tls(&self) -> bool {
        self.note("connection_is_tls", "");
        self.with_current(|r| r.tls).unwrap_or(false)
    }

    fn is_outbound(&self) -> bool {
        self.note("is_outbound", "");
        self.with_current(|r| r.outbound).unwrap_or(false)
    }

    fn response_status(&self) -> u32 {
        self.note("response_status", "");
        self.with_current(|r| r.response_status).unwrap_or(0)
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.note("add_response_header", name);
        self.with_current(|r| r.response_headers.push((name.into(), value.into())));
    }

    fn set_response_header(&self, name: &str, value: &str) {
        self.note("set_response_header", name);
        self.with_current(|r| {
            r.response_headers.retain(|(n, _)| n != name);
            r.response_headers.push((name.into(), value.into()));
        });
    }

    fn send_reply(&self, reply: &Reply) {
        self.note("send_reply", "");
        let sent = self.with_current(|r| r.replies.push(reply.clone()));
        assert!(sent.is_some(), "a reply sent outside a request context");
    }

    fn resume_request(&self) {
        self.note("resume_request", "");
        let resumed = self.with_current(|r| r.resumed += 1);
        assert!(resumed.is_some(), "resume outside a request context");
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        self.note("dispatch", cluster);
        if !self.clusters.borrow().iter().any(|c| c == cluster) {
            return None;
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.dispatched.borrow_mut().push(Dispatched {
            token,
            to: self.active.get(),
            on_behalf_of: self.current.get(),
            cluster: cluster.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.unwrap_or_default().to_vec(),
            timeout_ms,
            answered: self.inline_failures.get(),
        });
        if self.inline_failures.get() {
            let vm = self.vm.borrow().as_ref().and_then(std::rc::Weak::upgrade);
            if let Some(vm) = vm {
                *self.answer.borrow_mut() = (0, Vec::new());
                engine::call_response(self, &vm, self.active.get(), token, 0);
            }
        }
        Some(token)
    }

    fn call_response_status(&self) -> u32 {
        self.note("call_response_status", "");
        self.answer.borrow().0
    }

    fn call_response_body(&self, size: usize) -> Vec<u8> {
        self.note("call_response_body", "");
        let a = self.answer.borrow();
        a.1.get(..size.min(a.1.len())).unwrap_or_default().to_vec()
    }

    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.note("get_shared", key);
        match self.world.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.note("set_shared", key);
        let mut shared = self.world.shared.borrow_mut();
        let current = shared.get(key).map(|(_, c)| *c);
        if cas.is_some_and(|c| Some(c) != current) {
            return false;
        }
        let next = self.world.next_cas.get() + 1;
        self.world.next_cas.set(next);
        shared.insert(key.to_string(), (value.to_vec(), next));
        true
    }

    fn enter(&self, context_id: u32) -> bool {
        self.note("enter", "");
        if context_id != ROOT && !self.requests.borrow().contains_key(&context_id) {
            return false;
        }
        self.current.set(context_id);
        true
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        self.note("fill_random", "");
        for b in buf.iter_mut() {
            self.rng.set(self.rng.get().wrapping_add(37));
            *b = self.rng.get();
        }
        true
    }
}

pub const ROOT: u32 = 1;
pub const CLUSTER: &str = "outbound|8080||keycloak";

/// One worker VM: the engine's state and its fake host.
pub struct Proxy {
    pub host: FakeHost,
    pub vm: VmRef,
    paused_at_headers: RefCell<std::collections::HashSet<u32>>,
}

impl Proxy {
    /// A VM configured with `config` (JSON). Tokens of its dispatches start at `first_token`,
    /// so that two VMs' tokens differ in a test's output.
    pub fn new(world: &Rc<World>, config: &serde_json::Value, first_token: u32) -> Proxy {
        let host = FakeHost::new(world.clone(), first_token);
        let vm = engine::configure(&host, config.to_string().as_bytes())
            .unwrap_or_else(|| panic!("configuration refused: {:?}", host.logs.borrow()));
        *host.vm.borrow_mut() = Some(Rc::downgrade(&vm));
        Proxy {
            host,
            vm,
            paused_at_headers: RefCell::default(),
        }
    }

    fn run_in<T>(&self, ctx: u32, f: impl FnOnce() -> T) -> T {
        self.host.active.set(ctx);
        self.host.current.set(ctx);
        let out = f();
        self.host.active.set(ROOT);
        self.host.current.set(ROOT);
        out
    }

    pub fn tick(&self) -> u64 {
        self.run_in(ROOT, || engine::tick(&self.host, &self.vm, ROOT))
    }

    /// A request arrives in a new context `ctx` with these headers.
    pub fn request(&self, ctx: u32, headers: &[(&str, &str)]) -> Outcome {
        self.request_on(ctx, headers, false)
    }

    /// A request on an inbound or (`outbound`) an outbound listener.
    pub fn request_on(&self, ctx: u32, headers: &[(&str, &str)], outbound: bool) -> Outcome {
        let req = FakeRequest {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            outbound,
            tls: self.host.tls.get(),
            ..FakeRequest::default()
        };
        self.host.requests.borrow_mut().insert(ctx, req);
        let outcome = self.run_in(ctx, || {
            engine::request_headers(&self.host, &self.vm, ctx, false)
        });
        if outcome == Outcome::Pause {
            self.paused_at_headers.borrow_mut().insert(ctx);
        }
        outcome
    }

    /// The request's body arrives, whole — as in Envoy, only when the headers were not paused
    /// (proxy-wasm turns a Pause at the headers into StopAllIteration: no body callback).
    pub fn body(&self, ctx: u32, body: &[u8]) -> Outcome {
        assert!(
            !self.paused_at_headers.borrow().contains(&ctx),
            "Envoy would never hand this filter the body of request {ctx}: its headers paused"
        );
        if let Some(r) = self.host.requests.borrow_mut().get_mut(&ctx) {
            r.body = body.to_vec();
        }
        self.run_in(ctx, || {
            engine::request_body(&self.host, &self.vm, ctx, body.len(), true)
        })
    }

    /// The service answers request `ctx` with `status`.
    pub fn respond(&self, ctx: u32, status: u32) -> Outcome {
        if let Some(r) = self.host.requests.borrow_mut().get_mut(&ctx) {
            r.response_status = status;
        }
        self.run_in(ctx, || engine::response_headers(&self.host, &self.vm, ctx))
    }

    /// The stream of `ctx` ends (answered, or reset by the client): Envoy cancels its calls.
    pub fn end(&self, ctx: u32) {
        self.run_in(ctx, || engine::done(&self.host, &self.vm, ctx));
        self.host.requests.borrow_mut().remove(&ctx);
        for d in self.host.dispatched.borrow_mut().iter_mut() {
            if d.on_behalf_of == ctx {
                d.answered = true;
            }
        }
    }

    /// The calls not answered yet.
    pub fn open_calls(&self) -> Vec<Dispatched> {
        self.host
            .dispatched
            .borrow()
            .iter()
            .filter(|d| !d.answered)
            .cloned()
            .collect()
    }

    /// The one open call whose path contains `path_part`.
    pub fn call_to(&self, path_part: &str) -> Dispatched {
        let open: Vec<Dispatched> = self
            .open_calls()
            .into_iter()
            .filter(|d| d.path().contains(path_part))
            .collect();
        assert_eq!(open.len(), 1, "open calls to {path_part}: {open:?}");
        open.into_iter().next().unwrap()
    }

    /// Envoy delivers an answer (status 0: the call timed out or failed) to the context that
    /// dispatched the call.
    pub fn answer(&self, token: u32, status: u32, body: &[u8]) {
        let d = {
            let mut all = self.host.dispatched.borrow_mut();
            let d = all
                .iter_mut()
                .find(|d| d.token == token && !d.answered)
                .unwrap_or_else(|| panic!("no open call {token}"));
            d.answered = true;
            d.clone()
        };
        *self.host.answer.borrow_mut() = (status, body.to_vec());
        let to = d.to;
        self.run_in(to, || {
            engine::call_response(&self.host, &self.vm, to, token, body.len());
        });
    }

    pub fn req(&self, ctx: u32) -> FakeRequest {
        self.host
            .requests
            .borrow()
            .get(&ctx)
            .cloned()
            .unwrap_or_default()
    }

    pub fn status(&self, ctx: u32) -> Option<u32> {
        self.req(ctx).reply().map(|r| r.status)
    }

    pub fn waiting(&self) -> usize {
        self.vm.borrow().waiters.len()
    }
}
