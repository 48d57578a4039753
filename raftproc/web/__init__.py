"""The live page (index.html, app.js, style.css): plain files the supervisor serves
(raftproc.ops.web), with no build step and nothing fetched from elsewhere."""
