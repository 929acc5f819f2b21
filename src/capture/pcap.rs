//! The classic pcap file format (what `tcpdump -w` writes and `tcpdump -r`
//! and Wireshark read): a global header, then a record header and the
//! captured bytes per frame. Microsecond timestamps, Ethernet link type,
//! this machine's byte order (readers detect it from the magic number).

use std::io::{self, Write};

const MAGIC: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_ETHERNET`.
const ETHERNET: u32 = 1;

/// The file's header for frames cut at `snaplen`.
pub fn header(snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&ETHERNET.to_ne_bytes());
    h
}

/// One frame: captured at `ts_us` (Unix time, µs), `wire_len` bytes long on
/// the wire, of which `data` was kept.
pub fn record(out: &mut impl Write, ts_us: u64, wire_len: u32, data: &[u8]) -> io::Result<()> {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_ne_bytes());
    h[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
    h[12..16].copy_from_slice(&wire_len.to_ne_bytes());
    out.write_all(&h)?;
    out.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_back_field_by_field() {
        let mut f = header(128).to_vec();
        record(&mut f, 1_700_000_000_123_456, 60, &[0xab; 42]).unwrap();
        record(&mut f, 1_700_000_001_000_000, 1514, &[0xcd; 128]).unwrap();
        let u32_at = |at: usize| u32::from_ne_bytes(f[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(0), MAGIC);
        assert_eq!(u16::from_ne_bytes([f[4], f[5]]), 2);
        assert_eq!(u16::from_ne_bytes([f[6], f[7]]), 4);
        assert_eq!((u32_at(16), u32_at(20)), (128, 1));
        assert_eq!((u32_at(24), u32_at(28)), (1_700_000_000, 123_456));
        assert_eq!((u32_at(32), u32_at(36)), (42, 60));
        assert_eq!(&f[40..82], &[0xab; 42]);
        assert_eq!((u32_at(82), u32_at(86)), (1_700_000_001, 0));
        assert_eq!((u32_at(90), u32_at(94)), (128, 1514));
        assert_eq!(f.len(), 98 + 128);
    }

    /// tcpdump itself reads what we write, where it is installed.
    #[test]
    fn tcpdump_reads_it() {
        let Ok(out) = std::process::Command::new("tcpdump")
            .arg("--version")
            .output()
        else {
            eprintln!("skipping: no tcpdump");
            return;
        };
        assert!(out.status.success());
        // An ARP request, padded to 60 bytes.
        let mut arp = vec![0xff; 6];
        arp.extend([
            2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1,
        ]);
        arp.extend([10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        arp.resize(60, 0);
        let mut f = header(65535).to_vec();
        record(&mut f, 1_700_000_000_000_000, 60, &arp).unwrap();
        let path = std::env::temp_dir().join(format!("zproxy-pcap-{}.pcap", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        let out = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("ARP, Request who-has 10.0.0.2 tell 10.0.0.1"),
            "{text}"
        );
    }
}
