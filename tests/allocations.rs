//! `keep_freed_memory`: glibc keeps a frame's freed buffers for the next frame instead of
//! returning them to the kernel. Its own test binary: the settings are process-wide.
#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

/// Minor page faults of this thread so far.
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: filled above (rc 0).
    unsafe { usage.assume_init() }.ru_minflt
}

/// Minor faults of `frames` frames, each allocating, writing and then freeing the buffers of
/// a 360x480 MC frame's messages (12 images of 518-691 KB, all alive at once).
fn faults_of_frames(frames: usize) -> i64 {
    let before = minor_faults();
    for frame in 0..frames {
        let buffers: Vec<Vec<u8>> = (0..12)
            .map(|i| vec![(frame + i) as u8; if i % 2 == 0 { 691_200 } else { 518_400 }])
            .collect();
        std::hint::black_box(&buffers);
    }
    minor_faults() - before
}

#[test]
fn freed_frame_buffers_are_reused_instead_of_faulted_in_again() {
    let pages_per_frame = (6 * 691_200 + 6 * 518_400) / 4096;
    // glibc's defaults (the test harness sets nothing): the thresholds follow the largest
    // block freed, ~0.7 MB, so each frame's 7 MB go back to the kernel when freed.
    let default = faults_of_frames(10);
    assert!(
        default > 5 * pages_per_frame as i64,
        "{default} faults in 10 frames: glibc's default no longer returns the buffers \
         (the premise of keep_freed_memory)"
    );
    assert!(
        bayes_perception::keep_freed_memory(),
        "glibc refused the settings"
    );
    // The first frame may fault its pages in; the next nine reuse them.
    let kept = faults_of_frames(10);
    assert!(
        kept < 2 * pages_per_frame as i64,
        "{kept} faults in 10 frames (a frame is {pages_per_frame} pages): freed buffers \
         were not reused"
    );
}
