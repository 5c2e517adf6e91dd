//! Who may log in and do what, at run time: users with RabbitMQ's password
//! hashes and tags, vhosts, permissions (configure / write / read regexes
//! per user and vhost), topic permissions and policies. Every change is
//! appended to the metadata log under this module's write lock (so the
//! log has them in order) and answered once synced.
//!
//! Checks are RabbitMQ's: a resource name must match the permission's
//! regex (unanchored, as RabbitMQ's `re:run`); the default exchange is
//! checked as `amq.default`. A counter (`generation`) moves on every
//! change so connections can cache a check until something changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use regex::Regex;

use super::password::{Algorithm, PasswordHash};
use crate::protocol::AmqpError;
use crate::store::access::{
    AccessDefs, PermissionDef, PolicyDef, TopicPermissionDef, UserDef, VhostDef,
};
use crate::store::metadata::MetaOp;
use crate::store::Store;

mod seed;
mod settings;

pub use seed::{cluster_id, seed, CLUSTER_ID};
pub use settings::LimitUpdate;

/// Longest permission or policy regex accepted.
const MAX_REGEX_LEN: usize = 4096;

/// Which permission an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Declare and delete.
    Configure,
    /// Publish to an exchange, bind a queue (as destination).
    Write,
    /// Consume, get, purge, bind from an exchange (as source).
    Read,
}

/// What kind of resource is checked (for the refusal's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        }
    }
}

/// A change the API asked for that cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessError {
    /// No such user or vhost.
    NotFound,
    /// The input is invalid (the text says why).
    Invalid(String),
    /// The store refused the write.
    Store(String),
}

/// Compiled permissions of one user in one vhost.
#[derive(Debug)]
struct Compiled {
    configure: Option<Regex>,
    write: Option<Regex>,
    read: Option<Regex>,
}

/// (user, vhost, exchange).
type TopicKey = (String, String, String);

#[derive(Debug, Default)]
struct State {
    defs: AccessDefs,
    hashes: HashMap<String, Option<PasswordHash>>,
    compiled: HashMap<(String, String), Compiled>,
    topic: HashMap<TopicKey, (Option<Regex>, Option<Regex>)>,
}

/// The run-time access model.
#[derive(Debug)]
pub struct Access {
    state: RwLock<State>,
    generation: AtomicU64,
    has_topic: std::sync::atomic::AtomicBool,
    /// Users that may log in only over loopback (by name, as RabbitMQ's
    /// `loopback_users`).
    loopback_users: Vec<String>,
    store: Arc<Store>,
    /// Logins per protocol, for `/api/auth/attempts`.
    pub attempts: super::attempts::AuthAttempts,
}

/// Compile a permission regex; an empty one matches nothing, as in
/// RabbitMQ. None if it does not compile (only possible for records
/// written by hand: input is checked before it is stored).
fn compile(pattern: &str) -> Option<Regex> {
    if pattern.is_empty() {
        return None;
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// Check that `pattern` is a usable regex; the error names it.
pub fn validate_regex(pattern: &str) -> Result<(), AccessError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(AccessError::Invalid(format!(
            "regex longer than {MAX_REGEX_LEN} bytes"
        )));
    }
    if pattern.is_empty() {
        return Ok(());
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| AccessError::Invalid(format!("invalid regex '{pattern}': {e}")))
}

fn user_hash(u: &UserDef) -> Option<PasswordHash> {
    if u.password_hash.is_empty() {
        return None;
    }
    let algorithm = Algorithm::parse(&u.hashing_algorithm).unwrap_or_default();
    PasswordHash::parse(&u.password_hash, algorithm).ok()
}

impl State {
    fn from_defs(defs: AccessDefs) -> Self {
        let mut s = State::default();
        for u in defs.users.values() {
            s.hashes.insert(u.name.clone(), user_hash(u));
        }
        for (key, p) in &defs.permissions {
            s.compiled.insert(key.clone(), compile_perm(p));
        }
        for (key, t) in &defs.topic_permissions {
            s.topic
                .insert(key.clone(), (compile(&t.write), compile(&t.read)));
        }
        s.defs = defs;
        s
    }
}

fn compile_perm(p: &PermissionDef) -> Compiled {
    Compiled {
        configure: compile(&p.configure),
        write: compile(&p.write),
        read: compile(&p.read),
    }
}

impl Access {
    /// The model recovered from (or seeded into) the metadata log.
    pub fn new(defs: AccessDefs, loopback_users: Vec<String>, store: Arc<Store>) -> Self {
        let has_topic = !defs.topic_permissions.is_empty();
        Access {
            state: RwLock::new(State::from_defs(defs)),
            generation: AtomicU64::new(1),
            has_topic: has_topic.into(),
            loopback_users,
            store,
            attempts: Default::default(),
        }
    }

    /// Whether any user has topic permissions (publishes check them only
    /// then).
    pub fn has_topic_permissions(&self) -> bool {
        self.has_topic.load(Ordering::Acquire)
    }

    /// Moves on every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `user` with `password` may log in from a loopback address
    /// (`loopback`) or not; the reason otherwise, for the log.
    pub fn login(&self, user: &str, password: &str, loopback: bool) -> Result<(), &'static str> {
        if password.is_empty() {
            return Err("empty password");
        }
        let st = self.state.read();
        let Some(hash) = st.hashes.get(user) else {
            return Err("unknown user");
        };
        if !hash.as_ref().is_some_and(|h| h.verify(password)) {
            return Err("wrong password");
        }
        if !loopback && self.loopback_users.iter().any(|u| u == user) {
            return Err("loopback-only user");
        }
        Ok(())
    }

    /// Whether `user` may log in with SASL EXTERNAL: the TLS layer has
    /// verified the certificate that names it, so only its existence and
    /// the loopback rule are checked (RabbitMQ's rabbit_auth_mechanism_ssl
    /// with the internal backend).
    pub fn login_external(&self, user: &str, loopback: bool) -> Result<(), &'static str> {
        if !self.state.read().hashes.contains_key(user) {
            return Err("unknown user");
        }
        if !loopback && self.loopback_users.iter().any(|u| u == user) {
            return Err("loopback-only user");
        }
        Ok(())
    }

    /// Whether `user` may only log in over loopback.
    pub fn loopback_only(&self, user: &str) -> bool {
        self.loopback_users.iter().any(|u| u == user)
    }

    /// A user's tags (None: no such user).
    pub fn tags(&self, user: &str) -> Option<Vec<String>> {
        self.state
            .read()
            .defs
            .users
            .get(user)
            .map(|u| u.tags.clone())
    }

    /// A copy of every definition.
    pub fn defs(&self) -> AccessDefs {
        self.state.read().defs.clone()
    }

    /// Whether `user` has permissions in `vhost` (may open it).
    pub fn may_open(&self, user: &str, vhost: &str) -> bool {
        let key = (user.to_string(), vhost.to_string());
        self.state.read().compiled.contains_key(&key)
    }

    /// connection.open's check: 530 as RabbitMQ words it.
    pub fn check_open(&self, user: &str, vhost: &str) -> Result<(), AmqpError> {
        match self.may_open(user, vhost) {
            true => Ok(()),
            false => Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            ))),
        }
    }

    /// Whether `user` may do `perm` on the `kind` named `name` in `vhost`;
    /// 403 ACCESS_REFUSED with RabbitMQ's text if not.
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        perm: Perm,
        kind: Resource,
        name: &str,
    ) -> Result<(), AmqpError> {
        let shown = match (kind, name) {
            (Resource::Exchange, "") => "amq.default",
            _ => name,
        };
        let st = self.state.read();
        let key = (user.to_string(), vhost.to_string());
        let allowed = st.compiled.get(&key).is_some_and(|c| {
            let re = match perm {
                Perm::Configure => &c.configure,
                Perm::Write => &c.write,
                Perm::Read => &c.read,
            };
            re.as_ref().is_some_and(|re| re.is_match(shown))
        });
        match allowed {
            true => Ok(()),
            false => Err(AmqpError::access_refused(format!(
                "access to {} '{shown}' in vhost '{vhost}' refused for user '{user}'",
                kind.name()
            ))),
        }
    }

    /// Topic permissions: a publish to (`perm` Write) or a bind from
    /// (`perm` Read) topic exchange `exchange` with `routing_key` needs the
    /// matching regex of the user's topic permission on that exchange, when
    /// there is one (none: allowed, as RabbitMQ).
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        perm: Perm,
    ) -> Result<(), AmqpError> {
        let st = self.state.read();
        if st.topic.is_empty() {
            return Ok(());
        }
        let key = (user.to_string(), vhost.to_string(), exchange.to_string());
        let Some((write, read)) = st.topic.get(&key) else {
            return Ok(());
        };
        let re = if perm == Perm::Read { read } else { write };
        match re.as_ref().is_some_and(|r| r.is_match(routing_key)) {
            true => Ok(()),
            false => Err(AmqpError::access_refused(format!(
                "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
            ))),
        }
    }

    /// queue.declare's checks, as RabbitMQ's: configure on the queue;
    /// with a dead-letter exchange, read on the queue and write on that
    /// exchange (else dead-lettering would publish where the user may
    /// not).
    pub fn check_queue_declare(
        &self,
        user: &str,
        vhost: &str,
        queue: &str,
        arguments: &amq_protocol::types::FieldTable,
    ) -> Result<(), AmqpError> {
        self.check(user, vhost, Perm::Configure, Resource::Queue, queue)?;
        let dlx = arguments.inner().get("x-dead-letter-exchange");
        if let Some(dlx) = dlx.and_then(crate::broker::arguments::as_text) {
            self.check(user, vhost, Perm::Read, Resource::Queue, queue)?;
            self.check(user, vhost, Perm::Write, Resource::Exchange, &dlx)?;
        }
        Ok(())
    }

    /// exchange.declare's checks: configure on the exchange; with an
    /// alternate exchange, read on the exchange and write on the alternate.
    pub fn check_exchange_declare(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        arguments: &amq_protocol::types::FieldTable,
    ) -> Result<(), AmqpError> {
        self.check(user, vhost, Perm::Configure, Resource::Exchange, exchange)?;
        let ae = arguments.inner().get("alternate-exchange");
        if let Some(ae) = ae.and_then(crate::broker::arguments::as_text) {
            self.check(user, vhost, Perm::Read, Resource::Exchange, exchange)?;
            self.check(user, vhost, Perm::Write, Resource::Exchange, &ae)?;
        }
        Ok(())
    }

    /// Apply `ops` to the model and append them to the metadata log, in
    /// one critical section; the sync round that makes them durable.
    fn commit(&self, st: &mut State, ops: Vec<MetaOp>) -> Result<u64, AccessError> {
        let ticket = self
            .store
            .append_metadata(&ops)
            .map_err(|e| AccessError::Store(e.to_string()))?;
        for op in ops {
            self.apply(st, op);
        }
        self.has_topic
            .store(!st.topic.is_empty(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(ticket)
    }

    fn apply(&self, st: &mut State, op: MetaOp) {
        match &op {
            MetaOp::PutUser { def } => {
                st.hashes.insert(def.name.clone(), user_hash(def));
            }
            MetaOp::DeleteUser { name } => {
                st.hashes.remove(name);
                st.compiled.retain(|(u, _), _| u != name);
                st.topic.retain(|(u, _, _), _| u != name);
            }
            MetaOp::DeleteVhost { name } => {
                st.compiled.retain(|(_, v), _| v != name);
                st.topic.retain(|(_, v, _), _| v != name);
            }
            MetaOp::PutPermission { def } => {
                let key = (def.user.clone(), def.vhost.clone());
                st.compiled.insert(key, compile_perm(def));
            }
            MetaOp::DeletePermission { user, vhost } => {
                st.compiled.remove(&(user.clone(), vhost.clone()));
            }
            MetaOp::PutTopicPermission { def } => {
                let key = (def.user.clone(), def.vhost.clone(), def.exchange.clone());
                st.topic
                    .insert(key, (compile(&def.write), compile(&def.read)));
            }
            MetaOp::DeleteTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                st.topic
                    .remove(&(user.clone(), vhost.clone(), exchange.clone()));
            }
            _ => {}
        }
        let _ = crate::store::metadata::apply_access(&mut st.defs, op);
    }

    /// Create or replace a user.
    pub fn put_user(&self, def: UserDef) -> Result<u64, AccessError> {
        if def.name.is_empty() || def.name.len() > 255 {
            return Err(AccessError::Invalid("user names are 1 to 255 bytes".into()));
        }
        if Algorithm::parse(&def.hashing_algorithm).is_none() {
            return Err(AccessError::Invalid(format!(
                "unknown hashing_algorithm '{}'",
                def.hashing_algorithm
            )));
        }
        if !def.password_hash.is_empty() {
            let algorithm = Algorithm::parse(&def.hashing_algorithm).unwrap_or_default();
            PasswordHash::parse(&def.password_hash, algorithm).map_err(AccessError::Invalid)?;
        }
        let mut st = self.state.write();
        self.commit(&mut st, vec![MetaOp::PutUser { def }])
    }

    /// Delete a user (and its permissions).
    pub fn delete_user(&self, name: &str) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        if !st.defs.users.contains_key(name) {
            return Err(AccessError::NotFound);
        }
        let op = MetaOp::DeleteUser { name: name.into() };
        self.commit(&mut st, vec![op])
    }

    /// Whether the vhost exists in the model.
    pub fn has_vhost(&self, name: &str) -> bool {
        self.state.read().defs.vhosts.contains_key(name)
    }

    /// Record a vhost (the broker builds it).
    pub fn put_vhost(&self, def: VhostDef) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        self.commit(&mut st, vec![MetaOp::PutVhost { def }])
    }

    /// Forget a vhost and its permissions and policies (its objects'
    /// records were written by the broker before).
    pub fn delete_vhost(&self, name: &str) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        if !st.defs.vhosts.contains_key(name) {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, vec![MetaOp::DeleteVhost { name: name.into() }])
    }

    /// Set a user's permissions in a vhost.
    pub fn put_permission(&self, def: PermissionDef) -> Result<u64, AccessError> {
        for re in [&def.configure, &def.write, &def.read] {
            validate_regex(re)?;
        }
        let mut st = self.state.write();
        if !st.defs.users.contains_key(&def.user) || !st.defs.vhosts.contains_key(&def.vhost) {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, vec![MetaOp::PutPermission { def }])
    }

    /// Clear a user's permissions in a vhost.
    pub fn delete_permission(&self, user: &str, vhost: &str) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        let key = (user.to_string(), vhost.to_string());
        if !st.defs.permissions.contains_key(&key) {
            return Err(AccessError::NotFound);
        }
        let op = MetaOp::DeletePermission {
            user: key.0,
            vhost: key.1,
        };
        self.commit(&mut st, vec![op])
    }

    /// The policies (and operator policies) of a vhost.
    pub fn policies_of(&self, vhost: &str) -> Vec<PolicyDef> {
        let st = self.state.read();
        let all = st.defs.policies.values();
        all.filter(|p| p.vhost == vhost).cloned().collect()
    }

    /// Set a policy (checked by the caller against RabbitMQ's rules).
    pub fn put_policy(&self, def: PolicyDef) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        if !st.defs.vhosts.contains_key(&def.vhost) {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, vec![MetaOp::PutPolicy { def }])
    }

    /// Clear a policy.
    pub fn delete_policy(
        &self,
        vhost: &str,
        name: &str,
        operator: bool,
    ) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        let key = (vhost.to_string(), name.to_string(), operator);
        if !st.defs.policies.contains_key(&key) {
            return Err(AccessError::NotFound);
        }
        let op = MetaOp::DeletePolicy {
            vhost: key.0,
            name: key.1,
            operator,
        };
        self.commit(&mut st, vec![op])
    }

    /// Set a user's topic permissions on an exchange.
    pub fn put_topic_permission(&self, def: TopicPermissionDef) -> Result<u64, AccessError> {
        for re in [&def.write, &def.read] {
            validate_regex(re)?;
        }
        let mut st = self.state.write();
        if !st.defs.users.contains_key(&def.user) || !st.defs.vhosts.contains_key(&def.vhost) {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, vec![MetaOp::PutTopicPermission { def }])
    }

    /// Clear a user's topic permissions in a vhost (on one exchange, or
    /// all when `exchange` is None).
    pub fn delete_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        let ops: Vec<MetaOp> = st
            .defs
            .topic_permissions
            .keys()
            .filter(|(u, v, x)| u == user && v == vhost && exchange.is_none_or(|e| e == x))
            .map(|(u, v, x)| MetaOp::DeleteTopicPermission {
                user: u.clone(),
                vhost: v.clone(),
                exchange: x.clone(),
            })
            .collect();
        if ops.is_empty() {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_unanchored_and_empty_matches_nothing() {
        assert!(compile("^conf-").unwrap().is_match("conf-q"));
        assert!(compile("q").unwrap().is_match("xqx"));
        assert!(compile("").is_none());
        assert!(validate_regex("(").is_err());
        assert!(validate_regex(&"a".repeat(5000)).is_err());
    }
}
