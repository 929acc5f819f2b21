//! An indexed binary min-heap of per-flow deadlines. Each flow has at most
//! one entry; moving a deadline is O(log n) with no stale entries left behind
//! and no allocation after construction.

const ABSENT: u32 = u32::MAX;

pub struct Timers {
    /// (deadline in µs, flow slot), heap-ordered by deadline.
    heap: Vec<(u64, u32)>,
    /// Position of each slot's entry in `heap`, or ABSENT.
    pos: Vec<u32>,
}

impl Timers {
    pub fn new(slots: usize) -> Self {
        Self {
            heap: Vec::with_capacity(slots),
            pos: vec![ABSENT; slots],
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Sets (or moves) the deadline of `slot`.
    pub fn set(&mut self, slot: u32, deadline_us: u64) {
        match self.pos[slot as usize] {
            ABSENT => {
                self.heap.push((deadline_us, slot));
                let i = self.heap.len() - 1;
                self.pos[slot as usize] = i as u32;
                self.up(i);
            }
            i => {
                let i = i as usize;
                let old = self.heap[i].0;
                self.heap[i].0 = deadline_us;
                if deadline_us < old {
                    self.up(i);
                } else {
                    self.down(i);
                }
            }
        }
    }

    /// Removes the deadline of `slot`, if any.
    pub fn remove(&mut self, slot: u32) {
        let i = self.pos[slot as usize];
        if i == ABSENT {
            return;
        }
        let i = i as usize;
        self.pos[slot as usize] = ABSENT;
        let last = self.heap.pop().expect("entry present");
        if i < self.heap.len() {
            self.heap[i] = last;
            self.pos[last.1 as usize] = i as u32;
            self.up(i);
            self.down(i);
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<u64> {
        self.heap.first().map(|e| e.0)
    }

    /// Takes out the earliest entry if it is due at `now_us`.
    pub fn pop_due(&mut self, now_us: u64) -> Option<u32> {
        let &(deadline, slot) = self.heap.first()?;
        if deadline > now_us {
            return None;
        }
        self.remove(slot);
        Some(slot)
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < self.heap.len() && self.heap[r].0 < self.heap[least].0 {
                least = r;
            }
            if least == i {
                break;
            }
            self.swap(i, least);
            i = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_after_moves_and_removals() {
        let mut t = Timers::new(100);
        // A fixed pseudo-random sequence of sets, moves and removals.
        let mut x: u64 = 12345;
        let mut model = vec![None; 100];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 100) as u32;
            if x % 5 == 0 {
                t.remove(slot);
                model[slot as usize] = None;
            } else {
                let d = (x >> 20) % 1000;
                t.set(slot, d);
                model[slot as usize] = Some(d);
            }
        }
        assert_eq!(t.len(), model.iter().flatten().count());
        let mut last = 0;
        let mut seen = 0;
        while let Some(slot) = t.pop_due(u64::MAX) {
            let d = model[slot as usize]
                .take()
                .expect("popped a slot that had no deadline");
            assert!(d >= last, "out of order: {d} after {last}");
            last = d;
            seen += 1;
        }
        assert!(seen > 0);
        assert!(model.iter().all(Option::is_none), "a deadline was lost");
    }

    #[test]
    fn pop_due_respects_now() {
        let mut t = Timers::new(4);
        t.set(0, 50);
        t.set(1, 10);
        t.set(1, 70); // moved later
        assert_eq!(t.pop_due(49), None);
        assert_eq!(t.pop_due(60), Some(0));
        assert_eq!(t.pop_due(60), None);
        assert_eq!(t.next(), Some(70));
        assert_eq!(t.pop_due(70), Some(1));
        assert!(t.is_empty());
    }
}
