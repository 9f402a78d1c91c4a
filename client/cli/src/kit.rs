//! The Emergency Kit: one page with what keyward is, the account ID, the
//! Secret Key (large, monospace, and as a QR code), a line for the Master
//! Password, a box to write a recovery code by hand, where the vault lives
//! (relative to your home, so the page reads the same on a new device) and
//! how to back it up, and how to get back in. As PDF or as plain text.
//!
//! Rendering is a pure function of [`Kit`] and the home directory: the
//! public [`text`] and [`pdf`] read `HOME` once and pass it on, and the PDF's
//! document dates are taken from [`Kit::created`] (printpdf's own default
//! is the Unix epoch, which is why kits used to say they were made in 1970).

use std::path::Path;

use printpdf::{
    BuiltinFont, Color, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions,
    Point, Pt, Rect, Rgb, TextItem,
};
use qrcode::{EcLevel, QrCode};

/// What goes on the kit.
pub struct Kit<'a> {
    /// The account.
    pub account_id: &'a str,
    /// The Secret Key, in display form.
    pub secret_key: &'a str,
    /// The vault file, as an absolute path on this device.
    pub vault_path: &'a str,
    /// The date, e.g. `2026-11-25 14:03 UTC` (see `output::date`); also the
    /// PDF's creation and modification dates.
    pub created: &'a str,
}

/// The version of keyward that wrote the kit: the user needs keyward itself
/// to get back in, and there is no public download address to print.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What keyward is, for whoever finds the page (a relative, the user in ten
/// years).
const WHAT_IT_IS: &str =
    "keyward \u{2014} a key agent that keeps your secrets encrypted on this device.";

/// Above the fields: why the page matters, and what it alone cannot do.
const KEEP_SAFE: [&str; 3] = [
    "Keep this page somewhere safe, apart from your devices. With it and your Master",
    "Password, anyone can open your vault; without it, nobody can (not even with your",
    "password) unless they also have one of your devices.",
];

/// The label of the recovery-code box.
const RECOVERY_LABEL: &str = "RECOVERY CODE";
/// How to fill the recovery-code box.
const RECOVERY_HINT: &str = "make one with `keyward recovery-code new`, write it here by hand";
/// The recovery code's printed prefix (see `agent/src/account/recovery.rs`:
/// `RC1-` and 52 symbols in 13 groups of four).
const RECOVERY_PREFIX: &str = "RC1-";
/// Groups of four symbols on the first and on the second row of the box.
const RECOVERY_ROWS: [usize; 2] = [7, 6];

/// The backup advice, after the vault's path, naming its file.
fn backup_lines(vault_file: &str) -> [String; 4] {
    [
        format!("Back it up: `keyward backup` (or copy {vault_file}) to another disk"),
        "or a cloud folder, again after you add or change secrets. It is encrypted: without"
            .to_owned(),
        "the Secret Key and the Master Password, a copy is safe to keep".to_owned(),
        "anywhere (but not next to this page).".to_owned(),
    ]
}

/// Where to get keyward again: there is no download address to print, so
/// the version that wrote the kit, and keep the package with the backup.
fn version_lines() -> [String; 2] {
    [
        format!("Written by keyward {VERSION} (`keyward --version` shows the version installed)."),
        "Keep a copy of the keyward package you installed with your vault backup.".to_owned(),
    ]
}

/// How to get back in, line by line, given the vault's shown path; a line
/// that starts with two spaces continues the one before.
fn recovery_steps(vault: &str) -> [String; 6] {
    [
        "Lost this device: install keyward, copy your vault backup to".to_owned(),
        format!("  {vault}, then run `keyward unlock --with none`"),
        "  and type the Secret Key above and your Master Password.".to_owned(),
        "Forgot the Master Password or lost this page: `keyward recover` with the recovery"
            .to_owned(),
        "  code written above (`keyward recovery-code list` shows the IDs still valid).".to_owned(),
        "Without a copy of the vault, neither this page nor a recovery code brings it back."
            .to_owned(),
    ]
}

/// `path` as the user would type it: `~/…` when it lies under `home`, as it
/// is otherwise (and when the home is unknown, relative or `/`).
fn shown_path(path: &str, home: Option<&Path>) -> String {
    let Some(home) = home.filter(|h| h.is_absolute() && h.parent().is_some()) else {
        return path.to_owned();
    };
    match Path::new(path).strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".to_owned(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.to_owned(),
    }
}

/// The vault's file name, e.g. `vault-7QH3MK.kwv`.
fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The user's home directory, from `HOME`.
fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(Into::into)
}

/// `2026-11-25 14:03 UTC` (the form of `output::date`) as a PDF date.
fn pdf_date(created: &str) -> Option<printpdf::DateTime> {
    let (date, rest) = created.split_once(' ')?;
    let time = rest.strip_suffix(" UTC")?;
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (d.next()?, d.next()?, d.next()?);
    let (hour, minute) = time.split_once(':')?;
    let date = printpdf::Date {
        year: year.parse().ok()?,
        month: month.parse().ok().filter(|m| (1..=12).contains(m))?,
        day: day.parse().ok().filter(|d| (1..=31).contains(d))?,
    };
    let time = printpdf::Time {
        hour: hour.parse().ok().filter(|h| *h < 24)?,
        minute: minute.parse().ok().filter(|m| *m < 60)?,
        second: 0,
        millisecond: 0,
    };
    let utc = printpdf::Offset {
        hours: 0,
        minutes: 0,
        seconds: 0,
        milliseconds: 0,
    };
    Some(printpdf::DateTime::new_in_offset(date, time, utc))
}

/// The kit as plain text.
pub fn text(k: &Kit<'_>) -> String {
    render_text(k, home_dir().as_deref())
}

fn render_text(k: &Kit<'_>, home: Option<&Path>) -> String {
    let vault = shown_path(k.vault_path, home);
    let rows: Vec<String> = RECOVERY_ROWS
        .iter()
        .map(|n| vec!["____"; *n].join("-"))
        .collect();
    let mut t = format!(
        "keyward Emergency Kit\n\
         =====================\n\
         {WHAT_IT_IS}\n\
         Created {created} for account {account}.\n\
         \n\
         {keep}\n\
         \n\
         Account ID:       {account}\n\
         Secret Key:       {sk}\n\
         Master Password:  ______________________________ (write it only if you must)\n\
         \n\
         Recovery code:    {prefix}{row0}\n\
         \x20                     {row1}\n\
         Recovery code ID: ________________\n\
         \x20                 ({RECOVERY_HINT})\n\
         \n\
         Vault:            {vault}\n",
        created = k.created,
        account = k.account_id,
        keep = KEEP_SAFE.join("\n"),
        sk = k.secret_key,
        prefix = RECOVERY_PREFIX,
        row0 = rows[0],
        row1 = rows[1],
    );
    for line in backup_lines(&file_name(k.vault_path)) {
        t.push_str("                  ");
        t.push_str(&line);
        t.push('\n');
    }
    t.push_str("\nHow to get back in\n");
    for line in recovery_steps(&vault) {
        match line.strip_prefix("  ") {
            Some(cont) => t.push_str(&format!("  {cont}\n")),
            None => t.push_str(&format!("- {line}\n")),
        }
    }
    t.push('\n');
    for line in version_lines() {
        t.push_str(&line);
        t.push('\n');
    }
    t
}

fn text_op(x: f32, y: f32, font: BuiltinFont, size: f32, s: &str) -> Vec<Op> {
    vec![
        Op::StartTextSection,
        Op::SetTextCursor {
            pos: Point::new(Mm(x), Mm(y)),
        },
        Op::SetFont {
            font: PdfFontHandle::Builtin(font),
            size: Pt(size),
        },
        Op::ShowText {
            items: vec![TextItem::Text(s.to_owned())],
        },
        Op::EndTextSection,
    ]
}

fn gray(v: f32) -> Color {
    Color::Rgb(Rgb {
        r: v,
        g: v,
        b: v,
        icc_profile: None,
    })
}

fn rect(x: f32, y: f32, w: f32, h: f32, mode: PaintMode) -> Op {
    Op::DrawRectangle {
        rectangle: Rect {
            x: Mm(x).into(),
            y: Mm(y).into(),
            width: Mm(w).into(),
            height: Mm(h).into(),
            mode: Some(mode),
            winding_order: None,
        },
    }
}

/// A horizontal rule to write on, 0.3 mm thick.
fn rule(x: f32, y: f32, w: f32) -> Op {
    rect(x, y, w, 0.3, PaintMode::Fill)
}

/// The kit as a one-page A4 PDF.
pub fn pdf(k: &Kit<'_>) -> Result<Vec<u8>, String> {
    render_pdf(k, home_dir().as_deref())
}

fn render_pdf(k: &Kit<'_>, home: Option<&Path>) -> Result<Vec<u8>, String> {
    use BuiltinFont::{Courier, CourierBold, Helvetica, HelveticaBold};
    let qr = QrCode::with_error_correction_level(k.secret_key.as_bytes(), EcLevel::M)
        .map_err(|e| format!("cannot make the QR code: {e}"))?;
    let vault = shown_path(k.vault_path, home);
    let mut ops = vec![
        Op::SaveGraphicsState,
        Op::SetFillColor { col: gray(0.0) },
        Op::SetOutlineColor { col: gray(0.0) },
    ];
    ops.extend(text_op(
        20.0,
        272.0,
        HelveticaBold,
        26.0,
        "keyward Emergency Kit",
    ));
    ops.extend(text_op(20.0, 264.0, Helvetica, 10.5, WHAT_IT_IS));
    ops.extend(text_op(
        20.0,
        258.5,
        Helvetica,
        10.5,
        &format!("Created {} for account {}.", k.created, k.account_id),
    ));
    for (i, line) in KEEP_SAFE.iter().enumerate() {
        ops.extend(text_op(20.0, 249.0 - 5.0 * i as f32, Helvetica, 10.0, line));
    }
    // The account ID and Secret Key box.
    ops.push(rect(15.0, 180.0, 180.0, 50.0, PaintMode::Stroke));
    ops.extend(text_op(20.0, 222.0, Helvetica, 10.0, "ACCOUNT ID"));
    ops.extend(text_op(20.0, 213.0, CourierBold, 18.0, k.account_id));
    ops.extend(text_op(20.0, 201.0, Helvetica, 10.0, "SECRET KEY"));
    ops.extend(text_op(20.0, 190.0, CourierBold, 19.0, k.secret_key));
    // The QR code of the Secret Key, below the box on the right, 45 mm wide.
    let n = qr.width();
    let size = 45.0f32;
    let module = size / n as f32;
    let (qx, qy) = (150.0f32, 127.0f32);
    for (i, c) in qr.to_colors().iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (row, col) = (i / n, i % n);
            ops.push(rect(
                qx + col as f32 * module,
                qy + size - (row as f32 + 1.0) * module,
                module,
                module,
                PaintMode::Fill,
            ));
        }
    }
    ops.extend(text_op(
        qx,
        qy - 5.0,
        Helvetica,
        8.0,
        "QR code of the Secret Key",
    ));
    // The Master Password line.
    ops.extend(text_op(
        20.0,
        170.0,
        Helvetica,
        10.0,
        "MASTER PASSWORD (write it here only if you must)",
    ));
    ops.push(rule(20.0, 160.0, 120.0));
    // The vault and how to back it up.
    ops.extend(text_op(20.0, 150.0, Helvetica, 10.0, "VAULT"));
    ops.extend(text_op(20.0, 144.0, Courier, 9.0, &vault));
    for (i, line) in backup_lines(&file_name(k.vault_path)).iter().enumerate() {
        ops.extend(text_op(20.0, 138.0 - 4.5 * i as f32, Helvetica, 8.5, line));
    }
    // The recovery-code box: RC1- and 13 cells of four symbols, then its ID.
    ops.push(rect(15.0, 71.0, 180.0, 44.0, PaintMode::Stroke));
    ops.extend(text_op(20.0, 108.0, Helvetica, 10.0, RECOVERY_LABEL));
    ops.extend(text_op(
        55.0,
        108.0,
        Helvetica,
        8.5,
        &format!("({RECOVERY_HINT})"),
    ));
    let (cell_w, cell_h, gap, x0) = (19.0f32, 9.0f32, 3.0f32, 34.0f32);
    for (r, cells) in RECOVERY_ROWS.iter().enumerate() {
        let y = 95.0 - 12.0 * r as f32;
        if r == 0 {
            ops.extend(text_op(20.0, y + 2.5, Courier, 12.0, RECOVERY_PREFIX));
        }
        for c in 0..*cells {
            let x = x0 + c as f32 * (cell_w + gap);
            ops.push(rect(x, y, cell_w, cell_h, PaintMode::Stroke));
            if c + 1 < *cells || r + 1 < RECOVERY_ROWS.len() {
                ops.push(rule(x + cell_w + 0.8, y + cell_h / 2.0, gap - 1.6));
            }
        }
    }
    ops.extend(text_op(20.0, 75.0, Helvetica, 10.0, "RECOVERY CODE ID"));
    ops.push(rule(62.0, 75.0, 70.0));
    // How to get back in.
    ops.extend(text_op(
        20.0,
        60.0,
        HelveticaBold,
        13.0,
        "How to get back in",
    ));
    for (i, line) in recovery_steps(&vault).iter().enumerate() {
        ops.extend(text_op(20.0, 53.0 - 5.0 * i as f32, Helvetica, 9.5, line));
    }
    for (i, line) in version_lines().iter().enumerate() {
        ops.extend(text_op(20.0, 17.0 - 4.5 * i as f32, Helvetica, 8.5, line));
    }
    ops.push(Op::RestoreGraphicsState);
    let page = PdfPage::new(Mm(210.0), Mm(297.0), ops);
    let mut doc = PdfDocument::new("keyward Emergency Kit");
    // printpdf dates a new document at the Unix epoch: use the kit's date.
    let date = pdf_date(k.created).unwrap_or_else(printpdf::DateTime::now);
    let info = &mut doc.metadata.info;
    info.creation_date = date;
    info.modification_date = date;
    info.metadata_date = date;
    info.creator = format!("keyward {VERSION}");
    info.subject = format!("Emergency Kit of keyward account {}", k.account_id);
    let mut warnings = Vec::new();
    let bytes = doc
        .with_pages(vec![page])
        .save(&PdfSaveOptions::default(), &mut warnings);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    fn kit() -> Kit<'static> {
        Kit {
            account_id: "ABCDEF",
            secret_key: "K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR",
            vault_path: "/home/u/.local/share/keyward/vault-ABCDEF.kwv",
            created: "2026-11-25 10:00 UTC",
        }
    }

    #[test]
    fn text_kit_has_every_field() {
        let t = render_text(&kit(), Some(Path::new(HOME)));
        for needle in [
            WHAT_IT_IS,
            "Created 2026-11-25 10:00 UTC for account ABCDEF.",
            "Account ID:       ABCDEF",
            "Secret Key:       K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR",
            "Master Password:",
            "Recovery code:    RC1-____-____-____-____-____-____-____\n",
            "\n                      ____-____-____-____-____-____\n",
            "Recovery code ID: ____",
            "keyward recovery-code new",
            "Vault:            ~/.local/share/keyward/vault-ABCDEF.kwv\n",
            "Back it up: `keyward backup` (or copy vault-ABCDEF.kwv) to another disk",
            "It is encrypted",
            "copy your vault backup to\n  ~/.local/share/keyward/vault-ABCDEF.kwv,",
            "keyward recover",
            "Without a copy of the vault",
            &format!("Written by keyward {VERSION} (`keyward --version`"),
        ] {
            assert!(t.contains(needle), "{needle:?} missing from\n{t}");
        }
        assert!(!t.contains(HOME), "the home directory is shown as ~\n{t}");
    }

    /// Issue 20: the kit command shows the Secret Key again, so the kit must
    /// not claim it is shown only once.
    #[test]
    fn the_kit_never_says_the_secret_key_is_shown_only_once() {
        let t = render_text(&kit(), Some(Path::new(HOME))).to_lowercase();
        for claim in ["only time", "only once", "never shows", "shown once"] {
            assert!(!t.contains(claim), "{claim:?} in\n{t}");
        }
    }

    #[test]
    fn the_vault_is_shown_relative_to_home_only_when_it_lies_under_it() {
        let v = "/home/u/.local/share/keyward/vault-ABCDEF.kwv";
        let rel = "~/.local/share/keyward/vault-ABCDEF.kwv";
        assert_eq!(shown_path(v, Some(Path::new("/home/u"))), rel);
        assert_eq!(shown_path(v, Some(Path::new("/home/u/"))), rel);
        assert_eq!(shown_path("/home/u", Some(Path::new("/home/u"))), "~");
        // A sibling whose name merely starts like the home is not under it.
        let sibling = "/home/u2/.local/share/keyward/vault-ABCDEF.kwv";
        assert_eq!(shown_path(sibling, Some(Path::new("/home/u"))), sibling);
        assert_eq!(
            shown_path("/srv/kw/vault.kwv", Some(Path::new("/home/u"))),
            "/srv/kw/vault.kwv"
        );
        assert_eq!(shown_path(v, None), v);
        assert_eq!(shown_path(v, Some(Path::new("/"))), v);
        assert_eq!(shown_path(v, Some(Path::new("home/u"))), v);
    }

    #[test]
    fn the_kit_date_becomes_the_pdf_date() {
        let d = pdf_date("2026-11-25 14:03 UTC").unwrap();
        assert_eq!((d.year(), u8::from(d.month()), d.day()), (2026, 11, 25));
        assert_eq!((d.hour(), d.minute(), d.second()), (14, 3, 0));
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25 14:03",
            "2026-13-25 14:03 UTC",
            "x-1-1 1:1 UTC",
        ] {
            assert!(pdf_date(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn pdf_kit_is_a_pdf_dated_by_the_kit() {
        let p = render_pdf(&kit(), Some(Path::new(HOME))).unwrap();
        assert!(p.starts_with(b"%PDF-"));
        assert!(p.windows(5).any(|w| w == b"%%EOF"));
        let has = |s: &[u8]| p.windows(s.len()).any(|w| w == s);
        assert!(has(b"D:20261125100000"), "the creation date is the kit's");
        assert!(!has(b"D:1970"), "no date of the Unix epoch");
    }
}
