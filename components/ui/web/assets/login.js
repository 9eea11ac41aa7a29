// The login page: uid and password to `/acs/api/v1/auth/login`; the router's IAM answers with
// the session cookies (the token one HttpOnly, SameSite=Strict, Secure over https).

import { login } from './api.js';
import { h, mount } from './dom.js';

export function render(root, _params, ctx) {
  const uid = h('input#login-uid', { name: 'uid', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input#login-password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const message = h('div.login-message', { role: 'alert' });
  const button = h('button.primary#login-submit', { type: 'submit' }, 'Log in');
  const form = h('form.login-card', {
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      message.textContent = '';
      try {
        await login(uid.value.trim(), password.value);
        ctx.loggedIn();
      } catch (err) {
        message.textContent = err.status === 401 ? 'Wrong user name or password.'
          : err.status === 429 ? 'Too many attempts: wait a moment and try again.'
            : `Login failed: ${err.message}`;
        button.disabled = false;
        password.select();
      }
    },
  },
  h('div.brand-big', h('img', { src: '/assets/favicon.svg', alt: '' }), 'Capstan'),
  h('p.muted', 'Log in to manage this cluster.'),
  h('label', 'User', uid),
  h('label', 'Password', password),
  message,
  button);
  mount(root, h('div.login-page', form));
}
