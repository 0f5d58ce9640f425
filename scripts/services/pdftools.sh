# poppler-utils for the monthly report's PDF tests (tests/report_formats.rs): `pdftoppm` turns
# the PDF into PNG pages and `pdftotext` gives back its text. Sourced by scripts/test-env.sh;
# nothing keeps running.
need_pkg poppler-utils

for tool in pdftoppm pdftotext; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "poppler-utils installed but $tool is missing"
    fi
done
echo "export GRIDPROBE_TEST_PDFTOPPM=$(command -v pdftoppm || echo /usr/bin/pdftoppm)"
echo "export GRIDPROBE_TEST_PDFTOTEXT=$(command -v pdftotext || echo /usr/bin/pdftotext)"
