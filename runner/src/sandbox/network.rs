//! The `wasi:sockets` functions the runner answers itself, in place of
//! Wasmtime's: name lookups, and the creation of sockets nothing grants.
//!
//! Wasmtime's `socket_addr_check` sees only an IP and port, so it cannot keep
//! a capsule from sending DNS queries for names of its choosing (which leak
//! data to whoever runs the resolver), and a socket refused at creation never
//! reaches it to be recorded. Here a name lookup is answered only for a name
//! the grant names, from the address resolved when the grant was made, and
//! every refused lookup and socket creation is counted in the run's
//! `egress-denied` like any other refused network use. Connections themselves
//! are still checked by `socket_addr_check` in `mod.rs`.

use std::net::IpAddr;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::{ip_name_lookup, tcp_create_socket};
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::host::State;
use super::{DenialLog, EgressGrant};

/// The WASI sockets version whose functions are replaced (Wasmtime 48's).
const SOCKETS: &str = "0.2.12";

/// What one run may do with `wasi:sockets` beyond a checked connect.
pub(super) struct NetworkPolicy {
    /// Whether any raw TCP destination is granted (else no TCP socket is created).
    tcp: bool,
    /// Each granted host name (lower case, no trailing dot) with the address it resolved to.
    names: Vec<(String, IpAddr)>,
    denied: DenialLog,
}

impl NetworkPolicy {
    pub(super) fn new(egress: &[EgressGrant], denied: DenialLog) -> Self {
        let raw: Vec<&EgressGrant> = egress
            .iter()
            .filter(|g| g.destination.allows_tcp())
            .collect();
        Self {
            tcp: !raw.is_empty(),
            names: raw
                .iter()
                .filter_map(|g| {
                    let host = g.destination.host();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let ip = g.addresses.first()?.ip();
                    Some((normal_name(host), ip))
                })
                .collect(),
            denied,
        }
    }

    /// The answer to a lookup of `name`: an IP literal is its own answer (no
    /// query is sent); a granted name answers with its grant-time address;
    /// anything else is refused.
    fn answer(&self, name: &str) -> Option<IpAddr> {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(ip);
        }
        let name = normal_name(name);
        self.names
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, ip)| *ip)
    }
}

fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

type Answer<R> = wasmtime::Result<(Result<Resource<R>, ErrorCode>,)>;

/// Replaces Wasmtime's `resolve-addresses`, `create-tcp-socket` and
/// `create-udp-socket` in `linker` with the runner's.
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker
        .instance(&format!("wasi:sockets/ip-name-lookup@{SOCKETS}"))?
        .func_wrap(
            "resolve-addresses",
            |mut store: StoreContextMut<'_, State>,
             (network, name): (Resource<Network>, String)|
             -> Answer<ip_name_lookup::ResolveAddressStream> {
                let state = store.data_mut();
                let Some(ip) = state.network.answer(&name) else {
                    state.network.denied.note(&format!("NameLookup {name}"));
                    return Ok((Err(ErrorCode::AccessDenied),));
                };
                // An IP literal is answered by Wasmtime without a query.
                let mut view = state.sockets();
                match ip_name_lookup::Host::resolve_addresses(&mut view, network, ip.to_string()) {
                    Ok(stream) => Ok((Ok(stream),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            },
        )?;
    linker
        .instance(&format!("wasi:sockets/tcp-create-socket@{SOCKETS}"))?
        .func_wrap(
            "create-tcp-socket",
            |mut store: StoreContextMut<'_, State>,
             (family,): (IpAddressFamily,)|
             -> Answer<TcpSocket> {
                let state = store.data_mut();
                if !state.network.tcp {
                    state
                        .network
                        .denied
                        .note("TcpCreateSocket (no TCP destination is granted)");
                    return Ok((Err(ErrorCode::AccessDenied),));
                }
                state
                    .host_budget
                    .charge("a TCP socket", super::host_budget::SOCKET_BYTES)?;
                let mut view = state.sockets();
                match tcp_create_socket::Host::create_tcp_socket(&mut view, family) {
                    Ok(socket) => Ok((Ok(socket),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            },
        )?;
    linker
        .instance(&format!("wasi:sockets/udp-create-socket@{SOCKETS}"))?
        .func_wrap(
            "create-udp-socket",
            |mut store: StoreContextMut<'_, State>,
             (_family,): (IpAddressFamily,)|
             -> Answer<UdpSocket> {
                store
                    .data_mut()
                    .network
                    .denied
                    .note("UdpCreateSocket (UDP is never granted)");
                Ok((Err(ErrorCode::AccessDenied),))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}
