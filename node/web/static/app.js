// mercato web app: live updates (server-sent events), drag and drop, upload
// progress. Pages work without it, only less live. Text from the server is
// set as text, never parsed as markup.
"use strict";
(function () {
  const csrf = () => document.getElementById("main").dataset.csrf || "";

  function line(item) {
    const li = document.createElement("li");
    li.textContent = item.text;
    if (item.title) li.title = item.title;
    return li;
  }

  // <ul data-stream="/stream/events"> : each message {text, title} becomes an item on top.
  document.querySelectorAll("[data-stream]").forEach((list) => {
    const source = new EventSource(list.dataset.stream);
    source.onmessage = (msg) => {
      const item = JSON.parse(msg.data);
      list.prepend(line(item));
      while (list.children.length > 200) list.lastElementChild.remove();
      const empty = document.querySelector("[data-empty-for='" + list.id + "']");
      if (empty) empty.remove();
    };
  });

  // <section data-job="/stream/jobs/ID"> : the job's steps, live; the page reloads when it ends.
  document.querySelectorAll("[data-job]").forEach((box) => {
    const source = new EventSource(box.dataset.job);
    const steps = box.querySelector("ol.steps");
    const state = box.querySelector("[data-state]");
    source.onmessage = (msg) => {
      const job = JSON.parse(msg.data);
      steps.replaceChildren(...job.steps.map((text) => line({ text })));
      if (state) state.textContent = job.state;
      if (job.state !== "running") { source.close(); window.location.reload(); }
    };
  });

  // .dropzone around a file input: dropping a file chooses it.
  document.querySelectorAll(".dropzone").forEach((zone) => {
    const input = zone.querySelector("input[type=file]");
    const name = zone.querySelector("[data-file-name]");
    const show = () => { if (name && input.files.length) name.textContent = input.files[0].name; };
    input.addEventListener("change", show);
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); zone.classList.remove("over");
      if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
    });
  });

  // <form data-upload> : send with a progress bar, then go where the server says.
  document.querySelectorAll("form[data-upload]").forEach((form) => {
    const bar = form.querySelector("progress");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      if (bar) { bar.hidden = false; bar.value = 0; }
      xhr.upload.onprogress = (p) => { if (bar && p.lengthComputable) bar.value = p.loaded / p.total; };
      const problem = form.querySelector("[data-upload-error]");
      xhr.onload = () => {
        if (xhr.status === 413 && problem) {
          if (bar) bar.hidden = true;
          problem.textContent = "The file is larger than this node accepts " +
            "([api] max_upload_mb in mercato.toml); nothing was stored.";
          problem.hidden = false;
          return;
        }
        if (xhr.responseURL && xhr.responseURL !== window.location.href && xhr.status < 400) {
          window.location.assign(xhr.responseURL);
        } else {
          document.open(); document.write(xhr.responseText); document.close();
        }
      };
      xhr.onerror = () => { form.submit(); };
      xhr.send(new FormData(form));
    });
  });
})();
