//! The interpreter on programs libpcap compiles, against frames built here,
//! and on hand-made programs at the edges (bad programs, short frames).

use super::*;
use crate::capture::compile::compile;

/// An Ethernet/IPv4 frame from 10.0.0.1 to 10.0.0.2 with protocol `proto`
/// and ports `sport` -> `dport` (for TCP and UDP).
fn frame(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

fn arp() -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f
}

fn keeps(filter: &str, f: &[u8]) -> bool {
    let p = Program::new(compile(filter, 65535).expect("libpcap compiles it")).unwrap();
    p.run(f, f.len() as u32) > 0
}

#[test]
fn libpcap_filters_run_as_tcpdump_means_them() {
    let http = frame(6, 40000, 80);
    let http_back = frame(6, 80, 40000);
    let ssh = frame(6, 40000, 22);
    let dns = frame(17, 40000, 53);
    assert!(keeps("tcp port 80", &http));
    assert!(keeps("tcp port 80", &http_back));
    assert!(!keeps("tcp port 80", &ssh));
    assert!(!keeps("tcp port 80", &dns));
    assert!(!keeps("tcp port 80", &arp()));
    assert!(keeps("udp and dst port 53", &dns));
    assert!(keeps("arp or port 22", &arp()));
    assert!(keeps("arp or port 22", &ssh));
    assert!(keeps("host 10.0.0.2 and not port 22", &http));
    assert!(!keeps("host 10.0.0.9", &http));
    assert!(
        keeps("tcp[tcpflags] & tcp-syn == 0", &http),
        "indexed loads (x from the IP header length)"
    );
    assert!(keeps("len < 100", &http));
}

#[test]
fn short_frames_are_rejected_not_read_past() {
    let p = Program::new(compile("tcp port 80", 65535).unwrap()).unwrap();
    let full = frame(6, 40000, 80);
    for cut in 0..full.len() {
        // Never panics; the port is past byte 36, so every cut before it rejects.
        let kept = p.run(&full[..cut], full.len() as u32);
        if cut < 38 {
            assert_eq!(kept, 0, "cut at {cut}");
        }
    }
}

#[test]
fn bad_programs_are_refused() {
    let ret = Insn {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 1,
    };
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    assert_eq!(Program::new(vec![]).unwrap_err(), ProgramError::Empty);
    assert!(matches!(
        Program::new(vec![i(0x15, 5, 0, 1), ret]),
        Err(ProgramError::Jump { at: 0 })
    ));
    assert!(matches!(
        Program::new(vec![i(0x05, 0, 0, 1), ret]),
        Err(ProgramError::Jump { at: 0 })
    ));
    assert!(matches!(
        Program::new(vec![i(0x60, 0, 0, 16), ret]),
        Err(ProgramError::Memory { .. })
    ));
    assert!(matches!(
        Program::new(vec![i(0x02, 0, 0, 99), ret]),
        Err(ProgramError::Memory { .. })
    ));
    assert!(matches!(
        Program::new(vec![i(0x34, 0, 0, 0), ret]),
        Err(ProgramError::DivZero { at: 0 })
    ));
    assert!(matches!(
        Program::new(vec![i(0xff, 0, 0, 0), ret]),
        Err(ProgramError::Opcode { .. })
    ));
    assert!(matches!(
        Program::new(vec![i(0x00, 0, 0, 0)]),
        Err(ProgramError::NoReturn)
    ));
    assert!(Program::new(vec![ret; MAX_INSNS + 1]).is_err());
}

#[test]
fn arithmetic_scratch_memory_and_division_by_x_zero() {
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    // A = 6; M[3] = A; X = 0; A = M[3] * 7; ret A -> 42
    let p = Program::new(vec![
        i(0x00, 0, 0, 6),
        i(0x02, 0, 0, 3),
        i(0x01, 0, 0, 0),
        i(0x60, 0, 0, 3),
        i(0x24, 0, 0, 7),
        i(0x16, 0, 0, 0),
    ])
    .unwrap();
    assert_eq!(p.run(&[], 0), 42);
    // A / X with X = 0 rejects the frame.
    let p = Program::new(vec![
        i(0x00, 0, 0, 6),
        i(0x01, 0, 0, 0),
        i(0x3c, 0, 0, 0),
        i(0x16, 0, 0, 0),
    ])
    .unwrap();
    assert_eq!(p.run(&[], 0), 0);
    assert!(Program::accept_all().run(&[1, 2, 3], 3) > 0);
}

#[test]
fn programs_travel_as_text() {
    let insns = compile("tcp port 80", 65535).unwrap();
    assert_eq!(from_text(&to_text(&insns)).unwrap(), insns);
    assert!(from_text("1:2:3").is_none());
    assert!(from_text("1:2:3:4:5").is_none());
    assert!(from_text("x:0:0:0").is_none());
    assert!(compile("tcp port", 65535)
        .unwrap_err()
        .contains("bad filter"));
}
