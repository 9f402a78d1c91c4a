//! The Emergency Kit: one page with the account ID, the Secret Key (large,
//! monospace, and as a QR code), a line for the Master Password, where the
//! vault lives, and how to get back in. As PDF or as plain text.

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
    /// The vault file.
    pub vault_path: &'a str,
    /// The date, e.g. `2026-11-25 14:03 UTC`.
    pub created: &'a str,
}

const RECOVERY_STEPS: [&str; 4] = [
    "Unlock on a new device: install keyward, put your vault file in place",
    "  (from a backup or a synced folder), then run `keyward unlock --with none`",
    "  and type the Secret Key above and your Master Password.",
    "Forgot the Master Password or lost this page: `keyward recover` with a recovery code.",
];

/// The kit as plain text.
pub fn text(k: &Kit<'_>) -> String {
    format!(
        "keyward Emergency Kit\n\
         =====================\n\
         Created {created} for account {account}.\n\
         Keep this somewhere safe, apart from your devices. With it and your\n\
         Master Password, anyone can open your vault; without it, nobody can\n\
         (not even with your password) unless they have one of your devices.\n\
         \n\
         Account ID:       {account}\n\
         Secret Key:       {sk}\n\
         Master Password:  ______________________________ (write it only if you must)\n\
         Vault:            {vault}\n\
         \n\
         How to get back in\n\
         - {s0}\n  {s1}\n  {s2}\n\
         - {s3}\n",
        created = k.created,
        account = k.account_id,
        sk = k.secret_key,
        vault = k.vault_path,
        s0 = RECOVERY_STEPS[0],
        s1 = RECOVERY_STEPS[1].trim_start(),
        s2 = RECOVERY_STEPS[2].trim_start(),
        s3 = RECOVERY_STEPS[3],
    )
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

/// The kit as a one-page A4 PDF.
pub fn pdf(k: &Kit<'_>) -> Result<Vec<u8>, String> {
    let qr = QrCode::with_error_correction_level(k.secret_key.as_bytes(), EcLevel::M)
        .map_err(|e| format!("cannot make the QR code: {e}"))?;
    let mut ops = vec![Op::SaveGraphicsState, Op::SetFillColor { col: gray(0.0) }];
    ops.extend(text_op(
        20.0,
        270.0,
        BuiltinFont::HelveticaBold,
        26.0,
        "keyward Emergency Kit",
    ));
    ops.extend(text_op(
        20.0,
        261.0,
        BuiltinFont::Helvetica,
        11.0,
        &format!("Created {} for account {}.", k.created, k.account_id),
    ));
    for (i, line) in [
        "Keep this page somewhere safe, apart from your devices. With it and your Master",
        "Password, anyone can open your vault; without it, nobody can (not even with your",
        "password) unless they also have one of your devices.",
    ]
    .iter()
    .enumerate()
    {
        ops.extend(text_op(
            20.0,
            252.0 - 5.5 * i as f32,
            BuiltinFont::Helvetica,
            10.5,
            line,
        ));
    }
    // The Secret Key box.
    ops.push(Op::SetOutlineColor { col: gray(0.0) });
    ops.push(rect(15.0, 178.0, 180.0, 52.0, PaintMode::Stroke));
    ops.extend(text_op(
        20.0,
        222.0,
        BuiltinFont::Helvetica,
        10.0,
        "ACCOUNT ID",
    ));
    ops.extend(text_op(
        20.0,
        213.0,
        BuiltinFont::CourierBold,
        18.0,
        k.account_id,
    ));
    ops.extend(text_op(
        20.0,
        201.0,
        BuiltinFont::Helvetica,
        10.0,
        "SECRET KEY",
    ));
    ops.extend(text_op(
        20.0,
        190.0,
        BuiltinFont::CourierBold,
        19.0,
        k.secret_key,
    ));
    // The QR code of the Secret Key, below the box, 45 mm wide.
    let n = qr.width();
    let size = 45.0f32;
    let module = size / n as f32;
    let (qx, qy) = (150.0f32, 120.0f32);
    ops.push(Op::SetFillColor { col: gray(0.0) });
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
        qy - 6.0,
        BuiltinFont::Helvetica,
        8.0,
        "QR code of the Secret Key",
    ));
    // The Master Password line.
    ops.extend(text_op(
        20.0,
        160.0,
        BuiltinFont::Helvetica,
        10.0,
        "MASTER PASSWORD (write it here only if you must)",
    ));
    ops.push(Op::SetOutlineColor { col: gray(0.0) });
    ops.push(rect(20.0, 146.0, 120.0, 0.3, PaintMode::Fill));
    ops.extend(text_op(20.0, 132.0, BuiltinFont::Helvetica, 10.0, "VAULT"));
    ops.extend(text_op(
        20.0,
        126.0,
        BuiltinFont::Courier,
        8.0,
        k.vault_path,
    ));
    ops.extend(text_op(
        20.0,
        100.0,
        BuiltinFont::HelveticaBold,
        13.0,
        "How to get back in",
    ));
    for (i, line) in RECOVERY_STEPS.iter().enumerate() {
        ops.extend(text_op(
            20.0,
            92.0 - 6.0 * i as f32,
            BuiltinFont::Helvetica,
            10.0,
            line,
        ));
    }
    ops.push(Op::RestoreGraphicsState);
    let page = PdfPage::new(Mm(210.0), Mm(297.0), ops);
    let mut warnings = Vec::new();
    let bytes = PdfDocument::new("keyward Emergency Kit")
        .with_pages(vec![page])
        .save(&PdfSaveOptions::default(), &mut warnings);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kit() -> Kit<'static> {
        Kit {
            account_id: "ABCDEF",
            secret_key: "K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR",
            vault_path: "/home/u/.local/share/keyward/vault-ABCDEF.kwv",
            created: "2026-11-25 10:00 UTC",
        }
    }

    #[test]
    fn text_kit_has_everything() {
        let t = text(&kit());
        for needle in [
            "ABCDEF",
            "K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR",
            "vault-ABCDEF.kwv",
            "keyward recover",
            "Master Password:",
        ] {
            assert!(t.contains(needle), "{needle}\n{t}");
        }
    }

    #[test]
    fn pdf_kit_is_a_pdf() {
        let p = pdf(&kit()).unwrap();
        assert!(p.starts_with(b"%PDF-"));
        assert!(p.windows(5).any(|w| w == b"%%EOF"));
    }
}
