// Live inbox: poll for pending approvals and reload when the set changes.
// No inline scripts: the page's CSP allows only this file.
(function () {
  const table = document.querySelector("table[data-live]");
  if (!table) return;
  const seen = () => Array.from(table.querySelectorAll("tr[data-approval]")).map((r) => r.dataset.approval).sort().join(",");
  let current = seen();
  setInterval(async () => {
    try {
      const res = await fetch(table.dataset.live, { credentials: "same-origin" });
      if (!res.ok) return;
      const data = await res.json();
      const ids = data.approvals.map((a) => a.approval_id).sort().join(",");
      if (ids !== current) location.reload();
    } catch (e) { /* offline: try again next tick */ }
  }, 3000);
})();
