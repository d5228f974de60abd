//! PNG copies of the charts: the SVG rasterised with resvg, its text set in the system's fonts.

/// The system's fonts, with the generic `sans-serif` (the charts' fallback after Helvetica and
/// Arial) pointed at a sans face that exists: fontdb maps it to Arial, which Linux boxes often
/// lack, and a PNG without its labels is no use.
pub fn system_fonts() -> resvg::usvg::fontdb::Database {
    let mut db = resvg::usvg::fontdb::Database::new();
    db.load_system_fonts();
    let families: Vec<String> = db
        .faces()
        .filter(|f| !f.monospaced)
        .filter_map(|f| f.families.first().map(|(name, _)| name.clone()))
        .collect();
    let preferred =
        ["Arial", "Helvetica", "DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"];
    if let Some(name) = preferred
        .iter()
        .find(|p| families.iter().any(|f| f == *p))
        .map(|p| p.to_string())
        .or_else(|| families.first().cloned())
    {
        db.set_sans_serif_family(name);
    }
    db
}

/// Why a chart could not be rasterised.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The SVG does not parse.
    #[error("{0}")]
    Svg(resvg::usvg::Error),
    #[error("empty image")]
    Empty,
    /// The PNG encoder's message.
    #[error("{0}")]
    Encode(String),
}

/// Rasterises an SVG document to PNG bytes (system fonts for the text).
pub fn svg_to_png(
    svg: &str,
    fonts: &std::sync::Arc<resvg::usvg::fontdb::Database>,
) -> Result<Vec<u8>, RenderError> {
    let options = resvg::usvg::Options { fontdb: fonts.clone(), ..Default::default() };
    let tree = resvg::usvg::Tree::from_str(svg, &options).map_err(RenderError::Svg)?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or(RenderError::Empty)?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| RenderError::Encode(e.to_string()))
}
