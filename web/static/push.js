// Web Push on this device: the gateway's VAPID public key from `GET /v1/push/key`,
// a subscription from the browser's push service, and the subscription handed to
// the gateway (`POST /v1/push/subscriptions`) or taken back (`DELETE`). The service
// worker (sw.js) shows what arrives: a title, a short body and the job to open.

import { api } from './api.js';

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function registration() {
  return navigator.serviceWorker.ready;
}

/** 'unsupported' | 'denied' | 'on' | 'off' */
export async function pushState() {
  if (!pushSupported()) return 'unsupported';
  if (Notification.permission === 'denied') return 'denied';
  const worker = await navigator.serviceWorker.getRegistration();
  const subscription = worker ? await worker.pushManager.getSubscription() : null;
  return subscription ? 'on' : 'off';
}

export async function enablePush() {
  if (!pushSupported()) throw new Error('this browser cannot receive notifications');
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') throw new Error('notifications are not allowed for this site');
  const { public_key: publicKey } = await api('GET', '/v1/push/key');
  const worker = await registration();
  let subscription = await worker.pushManager.getSubscription();
  if (!subscription) {
    subscription = await worker.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(publicKey),
    });
  }
  const json = subscription.toJSON();
  await api('POST', '/v1/push/subscriptions', {
    endpoint: json.endpoint,
    keys: { p256dh: json.keys.p256dh, auth: json.keys.auth },
  });
}

export async function disablePush() {
  const worker = await navigator.serviceWorker.getRegistration();
  const subscription = worker ? await worker.pushManager.getSubscription() : null;
  if (!subscription) return;
  try {
    await api('DELETE', '/v1/push/subscriptions', { endpoint: subscription.endpoint });
  } finally {
    await subscription.unsubscribe();
  }
}
