//! The report's CSV: its columns in each language, its rows (every unit, each seat's
//! recommendation on its main cost center's row, a row per Q Developer Pro seat to cancel, the
//! rows without a user and of tax), and the files written.

use super::*;

/// Columns the report adds to the allocation's ([`crate::output::CSV_HEADER`]).
pub const SAVINGS_COLUMNS: [&str; 3] = ["recommended_plan", "savings_usd", "savings_reason"];
/// Who the user is, where known (Identity Store, or the activity report's e-mail when
/// `identity.labels` exports it).
pub const NAME_COLUMNS: [&str; 3] = ["user_name", "display_name", "email"];

/// The seat's tenure as of the month's end, from the daemon's history: first month with a
/// seat fee (YYYY-MM), months active, idle months in a row to the month, what they cost.
pub const TENURE_COLUMNS: [&str; 4] = [
    "licence_since",
    "months_active",
    "months_idle",
    "idle_cost_usd",
];

/// Each seat's tenure as of the report's month, by (account, region, user).
pub type SeatTenure = BTreeMap<crate::history::SeatKey, crate::history::Tenure>;

/// The CSV's columns (English).
pub fn header() -> Vec<&'static str> {
    crate::output::CSV_HEADER
        .iter()
        .chain(&SAVINGS_COLUMNS)
        .chain(&NAME_COLUMNS)
        .chain(&TENURE_COLUMNS)
        .copied()
        .collect()
}

/// The CSV's columns in `locale`.
pub fn header_in(locale: Locale) -> Vec<&'static str> {
    match locale {
        Locale::En => header(),
        Locale::ZhCn => ZH_CN_HEADER.to_vec(),
    }
}

/// Label of the row for cost that names no user.
pub const UNATTRIBUTED_ROW: &str = "(no user)";
/// Label of the tax row.
pub const TAX_ROW: &str = "(tax)";

/// The CSV of a period.
pub fn csv(view: &PeriodView, people: &BTreeMap<String, Person>) -> Result<Vec<u8>, csv::Error> {
    csv_in(view, people, Locale::En)
}

/// The CSV of a period with the header and row labels of `locale` (`zh-CN`: untagged cost
/// centers read 未设置).
pub fn csv_in(
    view: &PeriodView,
    people: &BTreeMap<String, Person>,
    locale: Locale,
) -> Result<Vec<u8>, csv::Error> {
    csv_with(view, people, locale, None)
}

/// [`csv_in`], with each seat's tenure (`tenure`, from the daemon's history) on its rows; the
/// tenure columns are empty without it.
pub fn csv_with(
    view: &PeriodView,
    people: &BTreeMap<String, Person>,
    locale: Locale,
    tenure: Option<&SeatTenure>,
) -> Result<Vec<u8>, csv::Error> {
    let t = locale.report();
    let (a, savings) = (&view.allocation, &view.savings);
    let mut out = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::WriterBuilder::new().from_writer(&mut out);
        w.write_record(header_in(locale))?;
        let period = a.period.to_string();
        // A seat's recommendation goes on the row of its main cost center.
        let recs: BTreeMap<(&str, &str, &str, &str), &Recommendation> = savings
            .recommendations
            .iter()
            .map(|r| {
                (
                    (
                        r.account_id.as_str(),
                        r.region.as_str(),
                        r.user_id.as_str(),
                        r.cost_center.as_str(),
                    ),
                    r,
                )
            })
            .collect();
        for u in &a.units {
            let rec = recs
                .get(&(
                    u.account_id.as_str(),
                    u.region.as_str(),
                    u.user_id.as_str(),
                    u.cost_center.as_str(),
                ))
                .copied();
            let savings = [
                rec.map_or_else(String::new, |r| r.recommended_plan.clone()),
                rec.map_or_else(String::new, |r| r.saving_usd.to_string()),
                rec.map_or_else(String::new, |r| r.reason.as_str().to_owned()),
            ];
            let who = people.get(&u.user_id).cloned().unwrap_or_default();
            let names = [who.user_name, who.display_name, who.email];
            let mut fields = crate::output::unit_fields(&period, u);
            if fields[4].is_empty() {
                fields[4] = t.untagged.to_owned();
            }
            let seat = tenure
                .and_then(|m| m.get(&(u.account_id.clone(), u.region.clone(), u.user_id.clone())));
            let tenure = tenure_fields(seat);
            w.write_record(fields.iter().chain(&savings).chain(&names).chain(&tenure))?;
        }
        q_developer_rows(&mut w, savings, people, &period, t.untagged)?;
        for (label, amount) in [(t.no_user, a.unattributed_usd), (t.tax, a.tax_usd)] {
            let amount = amount.to_string();
            w.write_record([
                period.as_str(),
                "",
                "",
                label,
                "",
                "",
                "0",
                "0",
                "0",
                &amount,
                &amount,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ])?;
        }
        w.flush()?;
    }
    Ok(out)
}

/// A row per Q Developer Pro seat of a user who also holds a Kiro seat: its recommendation,
/// with no Kiro amount (Q Developer cost is not Kiro cost).
fn q_developer_rows<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    savings: &crate::allocation::savings::Savings,
    people: &BTreeMap<String, Person>,
    period: &str,
    untagged: &str,
) -> Result<(), csv::Error> {
    for r in savings
        .recommendations
        .iter()
        .filter(|r| r.reason == crate::allocation::savings::Reason::QDeveloper)
    {
        let who = people.get(&r.user_id).cloned().unwrap_or_default();
        let cost_center = if r.cost_center.is_empty() {
            untagged
        } else {
            r.cost_center.as_str()
        };
        let saving = r.saving_usd.to_string();
        w.write_record([
            period,
            &r.account_id,
            "",
            &r.user_id,
            cost_center,
            &r.plan,
            "",
            "",
            "",
            "",
            "",
            "",
            &saving,
            r.reason.as_str(),
            &who.user_name,
            &who.display_name,
            &who.email,
            "",
            "",
            "",
            "",
        ])?;
    }
    Ok(())
}

/// The tenure columns of a seat (empty when history does not know it).
fn tenure_fields(t: Option<&crate::history::Tenure>) -> [String; 4] {
    t.map_or_else(Default::default, |t| {
        [
            t.licence_since.to_string(),
            t.months_active.to_string(),
            t.months_idle.to_string(),
            t.idle_cost_usd.to_string(),
        ]
    })
}

/// The newest report files in `dir` (at most [`crate::server::REPORTS_SERVED`]), by name;
/// unreadable ones are skipped with a warning.
pub async fn load_written(dir: &Path) -> Vec<(String, bytes::Bytes)> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let period = name
                .strip_prefix("kiro-cost-report-")
                .and_then(|r| r.strip_suffix(".csv"))
                .and_then(|p| p.parse::<BillingPeriod>().ok());
            if period.is_some() {
                names.push(name);
            }
        }
    }
    names.sort();
    let skip = names.len().saturating_sub(crate::server::REPORTS_SERVED);
    let mut out = Vec::new();
    for name in names.into_iter().skip(skip) {
        match tokio::fs::read(dir.join(&name)).await {
            Ok(b) => out.push((name, bytes::Bytes::from(b))),
            Err(e) => tracing::warn!(file = %dir.join(&name).display(), "report not served: {e}"),
        }
    }
    out
}

pub use crate::sink::report_file_name as file_name;

/// Writes `bytes` to `dir/name` atomically, on a blocking thread; returns the path.
pub async fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let target = path.clone();
    let written =
        tokio::task::spawn_blocking(move || crate::state::atomic_write(&target, &bytes)).await;
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    match written {
        Ok(r) => r.map_err(io)?,
        Err(e) => return Err(io(std::io::Error::other(e.to_string()))),
    }
    Ok(path)
}
