// airlock's approval page. Served as a file so the Content-Security-Policy can forbid inline
// scripts; everything it shows is inserted as text, never as HTML.
'use strict';

(function () {
  const body = document.body;
  const csrf = body.dataset.csrf || '';
  const page = body.dataset.page;

  function toBuf(s) {
    const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64url(buf) {
    const bytes = new Uint8Array(buf);
    let bin = '';
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  async function post(path, payload) {
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Airlock-CSRF': csrf },
      body: JSON.stringify(payload),
      cache: 'no-store',
    });
    let data;
    try {
      data = await r.json();
    } catch (e) {
      data = { error: 'HTTP ' + r.status };
    }
    if (!r.ok) throw new Error(data.error || 'HTTP ' + r.status);
    return data;
  }

  function say(text, kind) {
    const el = document.getElementById('result');
    if (!el) return;
    el.textContent = text;
    el.className = kind || '';
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- the list ------------------------------------------------------------------------

  function row(a) {
    const tr = el('tr', a.status);
    const env = el('td');
    env.appendChild(el('span', a.production ? 'env prod' : 'env', a.environment));
    tr.appendChild(env);
    tr.appendChild(el('td', '', a.agent));
    const call = el('td');
    const link = el('a', '', a.action);
    link.href = a.link;
    call.appendChild(link);
    if (a.irreversible) {
      call.appendChild(document.createTextNode(' '));
      call.appendChild(el('span', 'irreversible', 'IRREVERSIBLE'));
    }
    call.appendChild(el('div', 'destroys', a.destroys));
    tr.appendChild(call);
    tr.appendChild(el('td', '', a.status_text));
    tr.appendChild(el('td', '', a.created_at));
    return tr;
  }

  async function refreshList() {
    try {
      const r = await fetch('/api/approvals', { cache: 'no-store' });
      if (!r.ok) return;
      const data = await r.json();
      document.querySelector('#pending tbody').replaceChildren(...data.pending.map(row));
      document.querySelector('#recent tbody').replaceChildren(...data.recent.map(row));
      document.getElementById('pending-count').textContent = String(data.pending.length);
      document.getElementById('none-pending').hidden = data.pending.length > 0;
    } catch (e) {
      // airlock restarting: try again on the next tick
    }
  }

  // --- one approval --------------------------------------------------------------------

  let busy = false;

  function selectedIds() {
    const ids = [body.dataset.approval];
    document.querySelectorAll('.batch-item:checked').forEach((c) => ids.push(c.value));
    return ids;
  }

  function labelButtons() {
    const n = selectedIds().length;
    const suffix = n > 1 ? ' ' + n + ' calls with passkey' : ' with passkey';
    const approve = document.getElementById('approve');
    const deny = document.getElementById('deny');
    if (approve) approve.textContent = 'Approve' + suffix;
    if (deny) deny.textContent = 'Deny' + suffix;
  }

  function setButtons(enabled) {
    ['approve', 'deny'].forEach((id) => {
      const b = document.getElementById(id);
      if (b) b.disabled = !enabled;
    });
  }

  async function decide(decision) {
    if (busy) return;
    busy = true;
    setButtons(false);
    try {
      say('Preparing the receipt…');
      // A plan page decides the one plan it shows; an approval page, the ticked calls.
      const plan = page === 'plan';
      const begin = await post(plan ? '/api/plan/begin' : '/api/decide/begin', Object.assign({
        decision: decision,
        passkey: document.getElementById('passkey').value,
        ttl_secs: Number(document.getElementById('ttl').value),
      }, plan ? { plan: body.dataset.plan } : { ids: selectedIds() }));
      say('Confirm with your passkey…');
      const done = await post('/api/decide/finish', await assertWithPasskey(begin));
      const verb = decision === 'approve' ? 'Approved' : 'Denied';
      let text = plan && done.decided.length === 1
        ? verb + ' the plan: one receipt for ' + done.decided[0].calls + ' calls.'
        : verb + ' ' + done.decided.length + (done.decided.length === 1 ? ' call' : ' calls') + '.';
      const waiting = done.decided.filter((d) => d.status === 'pending');
      if (waiting.length) {
        text += ' ' + waiting.map((d) => d.status_text).join('; ') + '.';
      }
      if (done.refused.length) {
        text += ' Not decided: ' + done.refused.map((r) => r.id + ' (' + r.error + ')').join('; ');
      }
      say(text, done.refused.length ? 'warning' : 'ok');
      await refreshStatus();
    } catch (e) {
      say('Not decided: ' + (e && e.message ? e.message : String(e)), 'error');
      setButtons(true);
    } finally {
      busy = false;
    }
  }

  async function refreshStatus() {
    try {
      const path = page === 'plan'
        ? '/api/plans/' + encodeURIComponent(body.dataset.plan)
        : '/api/approvals/' + encodeURIComponent(body.dataset.approval);
      const r = await fetch(path, { cache: 'no-store' });
      if (!r.ok) return;
      const a = await r.json();
      const status = document.getElementById('status');
      status.textContent = a.status_text;
      status.className = 'status ' + a.status;
      if (a.status !== 'pending' && !busy) {
        setButtons(false);
        const decideSection = document.getElementById('decide');
        if (decideSection) decideSection.classList.add('decided');
      }
    } catch (e) {
      // try again on the next tick
    }
  }

  // An assertion by the selected passkey for a ceremony `begin` started; the finish body.
  async function assertWithPasskey(begin) {
    const pk = begin.publicKey;
    const cred = await navigator.credentials.get({
      publicKey: {
        challenge: toBuf(pk.challenge),
        rpId: pk.rpId,
        allowCredentials: pk.allowCredentials.map((c) => ({ type: c.type, id: toBuf(c.id) })),
        userVerification: pk.userVerification,
        timeout: pk.timeout,
      },
    });
    const res = cred.response;
    return {
      ceremony: begin.ceremony,
      credential_id: toB64url(cred.rawId),
      authenticator_data: toB64url(res.authenticatorData),
      client_data_json: toB64url(res.clientDataJSON),
      signature: toB64url(res.signature),
    };
  }

  // --- confirming a pending passkey ----------------------------------------------------

  async function confirmPasskey(confirm) {
    if (busy) return;
    busy = true;
    ['confirm', 'reject'].forEach((id) => { document.getElementById(id).disabled = true; });
    try {
      say('Preparing…');
      const select = document.getElementById('passkey');
      const begin = await post('/api/confirm/begin', {
        enrollment: body.dataset.enrollment,
        confirm: confirm,
        passkey: select ? select.value : '',
      });
      say('Confirm with your passkey…');
      const done = await post('/api/confirm/finish', await assertWithPasskey(begin));
      say((done.confirmed ? 'Confirmed' : 'Rejected') + ' the passkey of ' + done.name + ' (key ' + done.key_id + ').', 'ok');
    } catch (e) {
      say('Not done: ' + (e && e.message ? e.message : String(e)), 'error');
      ['confirm', 'reject'].forEach((id) => { document.getElementById(id).disabled = false; });
    } finally {
      busy = false;
    }
  }

  // --- enrollment ----------------------------------------------------------------------

  async function enroll() {
    const button = document.getElementById('enroll');
    button.disabled = true;
    try {
      say('Preparing…');
      const begin = await post('/api/enroll/begin', { token: body.dataset.token });
      const pk = begin.publicKey;
      say('Create the passkey on your device…');
      const cred = await navigator.credentials.create({
        publicKey: {
          challenge: toBuf(pk.challenge),
          rp: pk.rp,
          user: { id: toBuf(pk.user.id), name: pk.user.name, displayName: pk.user.displayName },
          pubKeyCredParams: pk.pubKeyCredParams,
          authenticatorSelection: pk.authenticatorSelection,
          attestation: pk.attestation,
          excludeCredentials: pk.excludeCredentials.map((c) => ({ type: c.type, id: toBuf(c.id) })),
          timeout: pk.timeout,
        },
      });
      const done = await post('/api/enroll/finish', {
        ceremony: begin.ceremony,
        credential_id: toB64url(cred.rawId),
        client_data_json: toB64url(cred.response.clientDataJSON),
        attestation_object: toB64url(cred.response.attestationObject),
      });
      if (done.pending) {
        say('Passkey registered for ' + done.enrolled + ' (key ' + done.key_id + '), but it counts only after an ' +
            'enrolled approver confirms it on the approval page. You can close this page.', 'ok pending');
      } else {
        say('Passkey registered for ' + done.enrolled + ' (key ' + done.key_id + '). You can close this page.', 'ok');
      }
    } catch (e) {
      say('Not registered: ' + (e && e.message ? e.message : String(e)), 'error');
      button.disabled = false;
    }
  }

  // --- wiring --------------------------------------------------------------------------

  if (page === 'list') {
    setInterval(refreshList, 2000);
  } else if (page === 'plan') {
    const approve = document.getElementById('approve');
    const deny = document.getElementById('deny');
    if (approve) approve.addEventListener('click', () => decide('approve'));
    if (deny) deny.addEventListener('click', () => decide('deny'));
    setInterval(refreshStatus, 2000);
  } else if (page === 'approval') {
    const approve = document.getElementById('approve');
    const deny = document.getElementById('deny');
    if (approve) approve.addEventListener('click', () => decide('approve'));
    if (deny) deny.addEventListener('click', () => decide('deny'));
    const all = document.getElementById('batch-all');
    if (all) {
      all.addEventListener('change', () => {
        document.querySelectorAll('.batch-item').forEach((c) => { c.checked = all.checked; });
        labelButtons();
      });
    }
    document.querySelectorAll('.batch-item').forEach((c) => c.addEventListener('change', labelButtons));
    labelButtons();
    setInterval(refreshStatus, 2000);
  } else if (page === 'confirm') {
    document.getElementById('confirm').addEventListener('click', () => confirmPasskey(true));
    document.getElementById('reject').addEventListener('click', () => confirmPasskey(false));
  } else if (page === 'enroll') {
    document.getElementById('enroll').addEventListener('click', enroll);
  }
})();
