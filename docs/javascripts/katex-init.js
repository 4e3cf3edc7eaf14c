// Typeset the \( \) and \[ \] spans of pymdownx.arithmatex with the site's own KaTeX, on every page load
// (document$ also fires after mkdocs-material's instant navigation).
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
