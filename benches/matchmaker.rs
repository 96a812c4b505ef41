//! Match decisions per second with 1,000, 10,000 and 100,000 users waiting.
//!
//! One round is one decision for a newcomer (`offer`), plus putting the queue back to its size:
//! the newcomer is removed again when it queued, or the partner it took is offered back (a
//! second decision) when it paired. Every decision is counted, and the removals' time is charged
//! to them, so the figure is still a slight lower bound.
//!
//! A long queue only exists when the waiting users cannot pair with each other; in random chat
//! that is the familiar surplus of men who want to meet women. So the waiting users are men
//! wishing for a woman, some of them also for a language (10 %), a country (5 %) or an age
//! bracket (5 %); they started searching at random times over the last minute, so most have
//! relaxed. The newcomers are everyone: 45 % men, 45 % women, 10 % unstated; 70 % wish for
//! nothing, the rest for a gender (15 %), a language (8 %), a country (4 %) or an age bracket
//! (3 %). Everyone: 70 % give an age (18-60), one or two of ten languages (English half the
//! time), one of 20 countries, and 60 % list one to three of 30 interests. All seeded: every run
//! measures the same people.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roulette::{Gender, GenderWish, Preferences, Profile};
use roulette::{Matchmaker, PreferenceMatchmaker, Seeker};

const LANGS: [&str; 10] = ["en", "es", "de", "fr", "pt", "ru", "hi", "ar", "ja", "it"];
const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "ES", "IT", "BR", "MX", "IN", "RU", "JP", "CA", "AU", "NL", "PL", "TR",
    "AR", "EG", "PT", "SE",
];
const AGE_BRACKETS: [(u8, u8); 3] = [(18, 25), (25, 35), (35, 50)];

/// A newcomer (`waiting_man` false) or a man waiting for a woman (`waiting_man` true).
fn person(rng: &mut StdRng, id: u64, since: Instant, waiting_man: bool) -> Seeker {
    let gender = match rng.random_range(0..100) {
        _ if waiting_man => Some(Gender::Male),
        0..45 => Some(Gender::Male),
        45..90 => Some(Gender::Female),
        _ => None,
    };
    let age = rng.random_bool(0.7).then(|| rng.random_range(18..=60));
    let mut languages = vec![if rng.random_bool(0.5) {
        "en".to_string()
    } else {
        LANGS[rng.random_range(0..LANGS.len())].to_string()
    }];
    if rng.random_bool(0.3) {
        let l = LANGS[rng.random_range(0..LANGS.len())].to_string();
        if !languages.contains(&l) {
            languages.push(l);
        }
    }
    let country = Some(COUNTRIES[rng.random_range(0..COUNTRIES.len())].to_string());
    let mut prefs = Preferences::default();
    if waiting_man {
        prefs.gender = GenderWish::Female;
        match rng.random_range(0..100) {
            0..10 => prefs.language = Some(languages[0].clone()),
            10..15 => prefs.country = country.clone(),
            15..20 => prefs.age_range = Some(AGE_BRACKETS[rng.random_range(0..AGE_BRACKETS.len())]),
            _ => {}
        }
    } else {
        match rng.random_range(0..100) {
            0..70 => {}
            70..85 => {
                prefs.gender = if rng.random_bool(0.5) {
                    GenderWish::Female
                } else {
                    GenderWish::Male
                }
            }
            85..93 => prefs.language = Some(languages[0].clone()),
            93..97 => prefs.country = country.clone(),
            _ => prefs.age_range = Some(AGE_BRACKETS[rng.random_range(0..AGE_BRACKETS.len())]),
        }
    }
    if rng.random_bool(0.6) {
        for _ in 0..rng.random_range(1..=3) {
            let tag = format!("topic{}", rng.random_range(0..30));
            if !prefs.interests.contains(&tag) {
                prefs.interests.push(tag);
            }
        }
    }
    Seeker {
        user: format!("u{id}").into(),
        profile: Arc::new(Profile {
            gender,
            age,
            languages,
            country,
        }),
        prefs: Arc::new(prefs),
        since,
        previous: None,
    }
}

/// A queue of exactly `n` waiting men (they never pair with each other).
fn filled(n: usize, rng: &mut StdRng, now: Instant) -> (PreferenceMatchmaker, u64) {
    let mut m = PreferenceMatchmaker::new(Duration::from_secs(5));
    let mut id = 0;
    while m.len() < n {
        id += 1;
        let since = now - Duration::from_millis(rng.random_range(0..60_000));
        assert!(m.offer(person(rng, id, since, true), since).is_none());
    }
    (m, id)
}

/// One newcomer's decision, then the queue put back to its size. Returns the decisions made.
fn round(m: &mut PreferenceMatchmaker, newcomer: &Seeker, now: Instant) -> u64 {
    // Each newcomer leaves the queue within its round, so ids can be reused.
    let s = newcomer.clone();
    let user = s.user.clone();
    match m.offer(black_box(s), now) {
        None => {
            m.remove(&user);
            1
        }
        Some(p) => {
            // Back into the queue: the size stays n (or the retry pairs, rarely).
            let mut w = p.waiting;
            w.since = now;
            match m.offer(w, now) {
                None => 2,
                Some(again) => {
                    let mut back = again.waiting;
                    back.since = now;
                    m.offer(back, now);
                    3
                }
            }
        }
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_decision");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(7);
        let start = Instant::now();
        let now = start + Duration::from_secs(60);
        let (mut m, _) = filled(n, &mut rng, now);
        // Newcomers are generated ahead, so the timing holds matching only.
        let newcomers: Vec<Seeker> = (0..4096)
            .map(|i| person(&mut rng, 1_000_000_000 + i, now, false))
            .collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // Time per decision: an iteration makes one decision for a newcomer and, when it
            // paired, a second one putting the partner back; both are counted, and the time of
            // the removals that keep the queue at its size is charged to them too.
            b.iter_custom(|iters| {
                let mut made = 0u64;
                let started = Instant::now();
                for _ in 0..iters {
                    made += round(&mut m, &newcomers[i % newcomers.len()], now);
                    i += 1;
                }
                let spent = started.elapsed();
                spent.mul_f64(iters as f64 / made as f64)
            })
        });
        assert!(m.len() >= n - 2, "the queue stayed near {n}: {}", m.len());
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
