//! tcpdump filter syntax to classic BPF, by libpcap itself
//! (`pcap_compile` on a dead Ethernet handle): the filter means exactly
//! what it means to tcpdump. A small FFI rather than the `pcap` crate: the
//! crate does not hand out the compiled instructions' fields.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_uint, c_void};

use super::bpf::Insn;

/// `DLT_EN10MB`: Ethernet.
const DLT_EN10MB: c_int = 1;
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *const Insn,
}

// `struct bpf_insn` is { u_short code; u_char jt; u_char jf; bpf_u_int32 k; }.
const _: () = assert!(std::mem::size_of::<Insn>() == 8);

#[link(name = "pcap")]
extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut c_void;
    fn pcap_compile(
        p: *mut c_void,
        fp: *mut BpfProgram,
        s: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_geterr(p: *mut c_void) -> *const c_char;
    fn pcap_close(p: *mut c_void);
}

/// Compiles `filter` for Ethernet frames cut at `snaplen`; libpcap's
/// message when it is not a valid filter.
pub fn compile(filter: &str, snaplen: u32) -> Result<Vec<Insn>, String> {
    let text = CString::new(filter).map_err(|_| "the filter contains a NUL byte".to_owned())?;
    let snaplen = c_int::try_from(snaplen).unwrap_or(c_int::MAX);
    // SAFETY: plain constructor; a NULL return is handled.
    let p = unsafe { pcap_open_dead(DLT_EN10MB, snaplen) };
    if p.is_null() {
        return Err("libpcap could not open a dead handle (out of memory?)".into());
    }
    let mut prog = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null(),
    };
    // SAFETY: p is a live handle; prog is writable; text outlives the call.
    let rc = unsafe { pcap_compile(p, &mut prog, text.as_ptr(), 1, PCAP_NETMASK_UNKNOWN) };
    let out = if rc != 0 {
        // SAFETY: p is live; pcap_geterr returns its NUL-terminated buffer.
        let msg = unsafe { CStr::from_ptr(pcap_geterr(p)) };
        Err(format!("bad filter {filter:?}: {}", msg.to_string_lossy()))
    } else {
        // SAFETY: on success bf_insns points at bf_len instructions with the
        // layout of `Insn` (asserted above), owned by prog until freed below.
        let insns =
            unsafe { std::slice::from_raw_parts(prog.bf_insns, prog.bf_len as usize) }.to_vec();
        // SAFETY: prog came from a successful pcap_compile and is freed once.
        unsafe { pcap_freecode(&mut prog) };
        Ok(insns)
    };
    // SAFETY: p is live and not used after this.
    unsafe { pcap_close(p) };
    out
}
