// The account's side of the page: the sign-in form (user and password, or a pasted token), the
// "Change password" dialog, "Sign out", and the message that says why the form is back (a
// refused token, a revoked session, a deactivated account, a used sign-in link). No token is
// kept here: main.js owns it and hands this module the actions that need it (see wire()).

const $ = (id) => document.getElementById(id);

// The sign-in form, with `message` (why it is shown) when there is one. `tokenForm`: the
// message is about a pasted token, so it shows beside that field too.
export function showSignIn(message, { tokenForm = false } = {}) {
  $('signin').hidden = false;
  const banner = $('signin-message');
  banner.textContent = message || '';
  banner.hidden = !message;
  $('signin-error').textContent = tokenForm ? message : '';
  $('login-error').textContent = '';
  $('login-password').value = '';
  $('token-input').value = '';
  const details = document.querySelector('.token-signin');
  if (tokenForm) details.open = true;
  if (tokenForm) $('token-input').focus();
  else if ($('login-user').value) $('login-password').focus();
  else $('login-user').focus();
}

export function hideSignIn() {
  $('signin').hidden = true;
  $('signin-message').hidden = true;
}

// What a refused HTTP answer says, in words.
export function errorText(reply, fallback) {
  const error = reply.body && reply.body.error;
  if (!error) return fallback;
  if (error.code === 'rate_limited') {
    const seconds = Math.max(1, Math.ceil((error.retry_after_ms || 0) / 1000));
    return `Too many attempts. Try again in ${seconds} s.`;
  }
  if (error.code === 'bad_credentials') return 'Wrong user or password.';
  return error.message || fallback;
}

function openPasswordDialog(user) {
  $('password-user').value = user || '';
  $('password-old').value = '';
  $('password-new').value = '';
  $('password-error').textContent = '';
  $('password-dialog').showModal();
  $('password-old').focus();
}

// `actions`: login(user, password) and changePassword(old, new), each resolving to null (done)
// or the reply that refused it; signInWithToken(token); signOut(); me() (the user id or null).
export function wire(actions) {
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const user = $('login-user').value.trim();
    const password = $('login-password').value;
    if (!user || !password) return;
    const button = $('login-form').querySelector('button');
    button.disabled = true;
    $('login-error').textContent = '';
    const refused = await actions.login(user, password);
    button.disabled = false;
    if (refused) {
      $('login-error').textContent = errorText(refused, 'Could not sign in.');
      $('login-password').select();
    }
  });

  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    $('signin-error').textContent = '';
    actions.signInWithToken(token);
  });

  $('sign-out').addEventListener('click', () => actions.signOut());
  $('change-password').addEventListener('click', () => openPasswordDialog(actions.me()));
  $('password-cancel').addEventListener('click', () => $('password-dialog').close());
  $('password-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const old = $('password-old').value;
    const fresh = $('password-new').value;
    if (fresh.length < 8) {
      $('password-error').textContent = 'The new password needs at least 8 characters.';
      return;
    }
    const button = $('password-form').querySelector('button[type="submit"]');
    button.disabled = true;
    $('password-error').textContent = '';
    const refused = await actions.changePassword(old, fresh);
    button.disabled = false;
    if (refused) {
      const error = refused.body && refused.body.error;
      $('password-error').textContent = error && error.code === 'bad_credentials'
        ? 'The current password is wrong.' : errorText(refused, 'Could not change the password.');
      return;
    }
    $('password-dialog').close();
  });
}
