// Loaded with defer (docs/conf.py): the page is parsed when this runs.

// Keyboard access to what scrolls (WCAG 2.1.1): code and tables that run past the right edge, and cell outputs
// capped in height, can only be scrolled with a mouse unless they take the focus. Each one that overflows gets a
// tab stop; one that fits gets none, so short blocks add no stops. (No region role: dozens of landmarks of one
// name.) Sizes change with the window, a tab or a dropdown opening (hidden panels measure 0), so a
// ResizeObserver re-checks each block when its size changes.
(() => {
  const SCROLLERS = "div.highlight > pre, div.cell_output, div.table-wrapper";
  const overflows = (el) => el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
  const check = (el) => {
    if (overflows(el)) el.tabIndex = 0;
    else el.removeAttribute("tabindex");
  };
  const observer = new ResizeObserver((entries) => entries.forEach((entry) => check(entry.target)));
  document.querySelectorAll(SCROLLERS).forEach((el) => observer.observe(el));
})();

// Printing opens every dropdown (and closes again those the reader had closed). The print stylesheet does the
// same with ::details-content where the browser has it (Chromium 131, Safari 18.4, Firefox 143 and later); this
// covers the others.
(() => {
  let opened = [];
  window.addEventListener("beforeprint", () => {
    opened = [...document.querySelectorAll("details.sd-dropdown:not([open])")];
    opened.forEach((dropdown) => { dropdown.open = true; });
  });
  window.addEventListener("afterprint", () => {
    opened.forEach((dropdown) => { dropdown.open = false; });
    opened = [];
  });
})();

// Landmarks a screen reader can tell apart. Sphinx gives the sidebar's toctree captions role="heading" without
// the aria-level ARIA 1.2 requires (sphinx-doc/sphinx#14030; the open #14437 fixes it the same way): level 2, the
// level ARIA 1.1 implied. Furo's two <aside> drawers (site navigation, page contents) have no names. Furo's page
// tools (view the source, colour theme, contents) and its back-to-top link sit beside the main landmark, in none
// (axe-core's region rule): they go into one named region, the link first, as before; it is position: fixed, so it
// shows where it did.
(() => {
  document.querySelectorAll('[role="heading"]:not([aria-level])').forEach((caption) => {
    caption.setAttribute("aria-level", "2");
  });
  const names = { "sidebar-drawer": "Site navigation", "toc-drawer": "On this page" };
  for (const [drawer, name] of Object.entries(names)) {
    document.querySelector(`aside.${drawer}:not([aria-label])`)?.setAttribute("aria-label", name);
  }
  const tools = document.querySelector(".article-container > .content-icon-container:not([role])");
  if (tools) {
    tools.setAttribute("role", "region");
    tools.setAttribute("aria-label", "Page tools");
    const backToTop = document.querySelector(".article-container > .back-to-top");
    if (backToTop) tools.prepend(backToTop);
  }
})();

// A link to a dropdown, or to something inside one, opens it (and any dropdown around it): otherwise the reader
// lands on a closed dropdown's title, or, where the browser does not open <details> for a fragment, nowhere. The
// page scrolls to it at once when it loads there, and smoothly, as furo's links do, from elsewhere on the page.
(() => {
  const reveal = (behavior) => {
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (!target) return;
    let opened = false;
    for (let dropdown = target.closest("details"); dropdown; dropdown = dropdown.parentElement.closest("details")) {
      opened ||= !dropdown.open;
      dropdown.open = true;
    }
    if (opened) target.scrollIntoView({ behavior });
  };
  window.addEventListener("hashchange", () => reveal("smooth"));
  reveal("instant");
})();
