//! What the data file's records must be to be taken back at a start (the admin API's rules),
//! and what the live state writes back when the file is compacted.

use crate::moderation::{Ban, MAX_BAN_SECS, Moderation, Report, Target, narrow_enough, normalised};
use crate::protocol::incoming::{MAX_REASON_CHARS, check_user_id};
use crate::store::Record;

/// Takes the records read from the file at `path` back into `m`, skipping (with a warning)
/// those the API would refuse.
pub(super) fn take_back(
    m: &mut Moderation,
    records: Vec<Record>,
    now: u64,
    path: &std::path::Path,
) {
    for r in records {
        match r {
            Record::Ban(b) => match admissible(b, now) {
                Ok(b) => {
                    m.ban(b, now).ok();
                }
                Err((id, why)) => {
                    tracing::warn!(file = %path.display(), id, "skipping a ban: {why}")
                }
            },
            Record::Unban { id } => {
                m.unban(&id);
            }
            Record::Report(r) => match report_admissible(&r) {
                Ok(()) => m.push_report(r),
                Err(why) => {
                    tracing::warn!(file = %path.display(), id = r.id, "skipping a report: {why}")
                }
            },
        }
    }
}

/// The records that make the live state: the bans in force and the reports kept.
pub(super) fn live_records(m: &Moderation, now: u64) -> Vec<Record> {
    let mut live: Vec<Record> = m.bans(now).into_iter().rev().map(Record::Ban).collect();
    live.extend(m.live_reports().into_iter().map(Record::Report));
    live
}

/// A ban read from the file, held to the admin API's rules (normalised as it would; the reason
/// within [`MAX_REASON_CHARS`], `until` within [`MAX_BAN_SECS`] of its making and of now, a
/// valid user id, an address prefix no wider than the API takes without `force`); otherwise
/// its id and why not.
fn admissible(mut b: Ban, now: u64) -> Result<Ban, (String, String)> {
    let bad = |b: &Ban, why: &str| Err((crate::echo::clip(&b.id).to_owned(), why.to_owned()));
    let longest = MAX_BAN_SECS * 1000;
    if b.reason.chars().count() > MAX_REASON_CHARS {
        return bad(&b, "its reason is too long");
    }
    if b.until > b.created.saturating_add(longest) || b.until > now.saturating_add(longest) {
        return bad(&b, "it lasts longer than the longest ban");
    }
    match &mut b.target {
        Target::User(u) => {
            if check_user_id(u).is_err() {
                return bad(&b, "its user id is not one");
            }
        }
        Target::Address(net) => {
            *net = normalised(*net);
            if !narrow_enough(net) && !b.force {
                return bad(&b, "its prefix is wider than the API takes without force");
            }
        }
    }
    Ok(b)
}

/// A report read from the file, held to the limits of `report-user`.
fn report_admissible(r: &Report) -> Result<(), &'static str> {
    if r.reason.chars().count() > MAX_REASON_CHARS {
        return Err("its reason is too long");
    }
    if check_user_id(&r.reporter).is_err() || check_user_id(&r.reported).is_err() {
        return Err("a user id is not one");
    }
    Ok(())
}
