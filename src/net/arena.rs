//! Memory for one worker's socket buffers: a single anonymous mapping whose
//! pages the kernel prefers to place on the worker's NUMA node, so buffers
//! never sit across the interconnect from the core that copies through them.
//! Pages are mapped on first use, so resident memory follows real use.

use memmap2::{MmapMut, MmapOptions};

/// Nodes the mask below can name.
const MAX_NODES: usize = 128;

pub struct Arena {
    map: MmapMut,
}

impl Arena {
    /// `len` bytes (zeroed) preferring `node`'s memory. The preference is
    /// best effort: a kernel without NUMA support keeps its default policy.
    pub fn on_node(len: usize, node: Option<u32>) -> std::io::Result<Arena> {
        let mut map = MmapOptions::new().len(len.max(1)).map_anon()?;
        if let Some(node) = node.filter(|&n| (n as usize) < MAX_NODES) {
            let mut mask = [0u64; MAX_NODES / 64];
            mask[node as usize / 64] |= 1 << (node % 64);
            // SAFETY: the range is exactly our own mapping; mask holds
            // MAX_NODES bits; mbind only changes where its pages are placed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mbind,
                    map.as_mut_ptr(),
                    map.len(),
                    libc::MPOL_PREFERRED,
                    mask.as_ptr(),
                    MAX_NODES as libc::c_ulong,
                    0 as libc::c_uint,
                )
            };
            if rc != 0 {
                log::debug!(
                    "socket buffers stay on the default memory policy (mbind: {})",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Arena { map })
    }

    /// The memory, for the rest of the process's life (the worker's sockets
    /// borrow it until exit).
    pub fn leak(self) -> &'static mut [u8] {
        let map: &'static mut MmapMut = Box::leak(Box::new(self.map));
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// get_mempolicy: report the policy of the mapping holding `addr`.
    const MPOL_F_ADDR: libc::c_int = 1 << 1;

    /// The policy the kernel holds for the page at `addr`: (mode, node mask).
    fn policy_at(addr: *mut u8) -> (i32, u64) {
        let mut mode: libc::c_int = -1;
        let mut mask = [0u64; MAX_NODES / 64];
        // SAFETY: outputs are writable and sized for MAX_NODES bits;
        // MPOL_F_ADDR only reads the policy of the mapping holding addr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut mode,
                mask.as_mut_ptr(),
                MAX_NODES as libc::c_ulong,
                addr,
                MPOL_F_ADDR,
            )
        };
        assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
        (mode, mask[0])
    }

    #[test]
    fn arena_prefers_the_given_node_and_is_zeroed() {
        if !std::path::Path::new("/sys/devices/system/node/node0").exists() {
            return; // a kernel without NUMA: nothing to prefer
        }
        let arena = Arena::on_node(1 << 20, Some(0)).unwrap().leak();
        assert!(arena.iter().all(|&b| b == 0));
        arena[12345] = 7;
        assert_eq!(policy_at(arena.as_mut_ptr()), (libc::MPOL_PREFERRED, 1));
        let plain = Arena::on_node(4096, None).unwrap().leak();
        assert_eq!(policy_at(plain.as_mut_ptr()).0, libc::MPOL_DEFAULT);
    }
}
