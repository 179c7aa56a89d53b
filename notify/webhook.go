package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// Headers of the signed webhook.
const (
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256 of the
	// body under the shared secret, as GitHub's X-Hub-Signature-256.
	HeaderSignature = "X-Deployd-Signature-256"
	// HeaderDelivery is the message's ID, the same on every attempt.
	HeaderDelivery = "X-Deployd-Delivery"
	// HeaderTimestamp is the message's time in Unix seconds (also "time"
	// in the body, which the signature covers).
	HeaderTimestamp = "X-Deployd-Timestamp"
	// HeaderEvent is the message's event.
	HeaderEvent = "X-Deployd-Event"
)

// Webhook sends messages as JSON to a URL, signed with HMAC-SHA256 so
// that the receiver can check they come from deployd. It is safe for
// concurrent use.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
}

// NewWebhook returns the sender for an http(s) URL and the shared secret;
// client nil means a client of its own. It fails, without repeating the
// URL, when the URL is not absolute http(s) or the secret is empty.
func NewWebhook(rawURL string, secret []byte, client *http.Client) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("notification webhook: the url must be an absolute http or https URL")
	}
	if len(secret) == 0 {
		return nil, errors.New("notification webhook: no secret to sign with")
	}
	if client == nil {
		client = &http.Client{}
	}
	return &Webhook{url: rawURL, secret: bytes.Clone(secret), client: client}, nil
}

// Sign returns the X-Deployd-Signature-256 value for body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Send posts m as JSON with its signature; any answer but 2xx is an
// error. Errors name neither the URL nor the secret.
func (w *Webhook) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("build webhook request: invalid url")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "deployd")
	req.Header.Set(HeaderSignature, Sign(w.secret, body))
	req.Header.Set(HeaderDelivery, m.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(m.Time.Unix(), 10))
	req.Header.Set(HeaderEvent, string(m.Event))
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text repeats the URL
			err = ue.Err
		}
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post webhook: the receiver answered %s", resp.Status)
	}
	return nil
}
