//! `sendmmsg(2)` where every datagram carries its own destination and its own source address.
//!
//! This is the crate's only `unsafe` code. No safe wrapper we depend on fits: quinn-udp 0.5 sends
//! one destination per call (GSO), rustix's ancillary messages have no `IP_PKTINFO`, and nix's
//! `sendmmsg` encodes one control-message list for every message of a call and reports how many
//! were sent only through an iterator that reads addresses it never wrote.
//!
//! The safety argument is local to [`sendmmsg`]: every pointer handed to the kernel points into
//! an array on its stack frame or into the caller's `contents` slices, all of which outlive the
//! system call; the headers say lengths that match those buffers, and the kernel reads only the
//! headers it is told of and what they point to, all written before the call (it writes nothing
//! but each header's `msg_len`).

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

use super::send::Datagram;

/// Datagrams per system call. `UIO_MAXIOV` (1024) is the kernel's limit; 64 are the replies to a
/// full receive batch of introductions (32), and keep the arrays one call fills on the stack
/// (~16 KiB, of which a call touches only what it sends).
pub const MAX_MESSAGES: usize = 64;

/// Room for one control message carrying the larger of `in_pktinfo` and `in6_pktinfo`.
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const CONTROL_LEN: usize =
    unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as _) } as usize;

/// A control buffer aligned as the `cmsghdr` the kernel reads at its start.
#[derive(Clone, Copy)]
#[repr(C)]
union Control {
    bytes: [u8; CONTROL_LEN],
    _align: libc::cmsghdr,
}

/// Sends the first datagrams of `datagrams` (at most [`MAX_MESSAGES`]) in one `sendmmsg` on
/// `socket`, each to its destination and, when it names one, from its source address
/// (`IP_PKTINFO` for an IPv4 source, `IPV6_PKTINFO` for an IPv6 one, IPv4-mapped on a dual-stack
/// socket: the form quinn-udp uses). Addresses must be in the socket's form.
///
/// Returns how many were sent, from the first, as the system call does: an error on the first
/// datagram is returned as the error (`WouldBlock` when the socket's buffer is full); an error on a
/// later one ends the call early and is reported by the next call, which starts with it.
pub(crate) fn sendmmsg(socket: BorrowedFd<'_>, datagrams: &[Datagram<'_>]) -> io::Result<usize> {
    let n = datagrams.len().min(MAX_MESSAGES);
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` entries are written (a light load sends one or two datagrams a call, and
    // initialising all 64 would cost more than they do); the kernel reads no others.
    let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; MAX_MESSAGES];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_MESSAGES];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_MESSAGES];
    let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_MESSAGES];

    for (i, d) in datagrams[..n].iter().enumerate() {
        let name = names[i].write(SockAddr::from(d.dest));
        let iov = iovs[i].write(libc::iovec {
            // The kernel only reads the data and the name (POSIX: sendmsg does not modify
            // them); the pointers are `*mut` because recvmsg shares the structures.
            iov_base: d.contents.as_ptr() as *mut libc::c_void,
            iov_len: d.contents.len(),
        });
        // SAFETY: `msghdr` is integers and pointers (and, on some libcs, private padding); all
        // zeros is a valid value of it: no name, no data, no control messages.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = name.as_ptr() as *mut libc::c_void;
        h.msg_namelen = name.len();
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        if let Some(src) = d.src {
            let control = controls[i].write(Control {
                bytes: [0; CONTROL_LEN],
            });
            h.msg_control = (control as *mut Control).cast();
            h.msg_controllen = CONTROL_LEN as _;
            // SAFETY: `h` points to `control`, CONTROL_LEN initialised bytes aligned for
            // `cmsghdr`, so CMSG_FIRSTHDR returns its start (not null: CONTROL_LEN >=
            // size_of::<cmsghdr>()), and the header plus either payload fit in it (CONTROL_LEN is
            // CMSG_SPACE of the larger). The payload is written unaligned, as CMSG_DATA promises
            // no alignment.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&h);
                debug_assert!(!cmsg.is_null());
                let used = match src {
                    IpAddr::V4(v4) => {
                        let info = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from_ne_bytes(v4.octets()),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        };
                        (*cmsg).cmsg_level = libc::IPPROTO_IP;
                        (*cmsg).cmsg_type = libc::IP_PKTINFO;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as _) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                        libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _)
                    }
                    IpAddr::V6(v6) => {
                        let info = libc::in6_pktinfo {
                            ipi6_addr: libc::in6_addr {
                                s6_addr: v6.octets(),
                            },
                            ipi6_ifindex: 0,
                        };
                        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as _) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                        libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as _)
                    }
                };
                // Exactly the message written: the kernel parses every byte up to
                // msg_controllen.
                h.msg_controllen = used as _;
            }
        }
        headers[i].write(libc::mmsghdr {
            msg_hdr: h,
            msg_len: 0,
        });
    }

    // SAFETY: `headers[..n]` are initialised above (the kernel reads `n` of them and no more);
    // each names its own socket address, one iovec over a live `contents` slice and, if any, its
    // own control buffer, all alive until this call returns. The kernel writes only `msg_len` of
    // each header.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as _,
            libc::MSG_DONTWAIT as _,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}
