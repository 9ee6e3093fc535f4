using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>
/// Who may talk to the server, decided before any route runs:
/// <list type="bullet">
/// <item>the <c>Host</c> header must name the server (localhost, the bind address, <c>--allowed-host</c> names), so a
/// page on another site cannot reach it through DNS rebinding (Ollama's rule; llama.cpp leaves it to a proxy);</item>
/// <item>a browser request from another origin (its <c>Origin</c> header) is refused unless <c>--cors-origin</c> allows
/// it, so a web page cannot make the server work (a <c>text/plain</c> or form POST needs no preflight); an allowed origin
/// gets its preflight answered and the CORS headers;</item>
/// <item>with <c>--api-key</c>, every route but <c>/health</c> needs the key: <c>Authorization: Bearer KEY</c> (scheme in
/// any case, RFC 9110), or for the pages and the event stream (a browser's <c>EventSource</c> cannot send headers) the
/// <c>api_key</c> query parameter once, kept afterwards in an HttpOnly, SameSite=Strict cookie. Keys are compared in
/// constant time.</item>
/// </list>
/// </summary>
internal sealed class AccessPolicy
{
    public const string KeyCookie = "gptsharp_api_key";
    public const string KeyQuery = "api_key";

    private readonly byte[]? _keyHash;
    private readonly HashSet<string> _hosts = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _origins = new(StringComparer.OrdinalIgnoreCase);
    private readonly bool _anyHost, _anyIpHost, _anyOrigin;

    public AccessPolicy(ServerOptions options)
    {
        _keyHash = options.ApiKey is { } key ? Hash(key) : null;
        foreach (string host in (string[])["localhost", "127.0.0.1", "::1", options.Host, .. options.AllowedHosts])
            _hosts.Add(host.Trim('[', ']'));
        _anyHost = options.AllowedHosts.Contains("*");
        // Bound to every interface: clients reach it by any of the machine's addresses (an IP literal cannot be
        // rebound) or by its name; other names still need --allowed-host.
        if (IPAddress.TryParse(options.Host, out var bind) && (bind.Equals(IPAddress.Any) || bind.Equals(IPAddress.IPv6Any)))
        {
            _anyIpHost = true;
            _hosts.Add(Dns.GetHostName());
        }
        foreach (string origin in options.CorsOrigins) _origins.Add(origin.TrimEnd('/'));
        _anyOrigin = _origins.Contains("*");
    }

    public bool RequiresKey => _keyHash is not null;

    /// <summary>Whether the request's <c>Host</c> names this server (an empty one, HTTP/1.0, is no browser's).</summary>
    public bool HostAllowed(HttpRequest request)
    {
        string host = request.Host.Host ?? "";
        if (_anyHost || host.Length == 0) return true;
        host = host.Trim('[', ']');
        if (_hosts.Contains(host) || host.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase)) return true;
        return _anyIpHost && IPAddress.TryParse(host, out _);
    }

    /// <summary>The page's own origin (<c>http://host:port</c>): its requests are not cross-origin.</summary>
    public static bool IsSameOrigin(HttpRequest request, string origin) =>
        string.Equals(origin, $"{request.Scheme}://{request.Host}", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether <c>--cors-origin</c> lets pages of <paramref name="origin"/> call the server.</summary>
    public bool CorsAllowed(string origin) => _anyOrigin || _origins.Contains(origin);

    /// <summary>The key the request carries, if any: the bearer token, else (GET/HEAD only) the query parameter, else the cookie.</summary>
    public static string? PresentedKey(HttpRequest request, out bool fromQuery)
    {
        fromQuery = false;
        string authorization = request.Headers.Authorization.ToString().Trim();
        int space = authorization.IndexOf(' ');
        if (space > 0 && authorization.AsSpan(0, space).Equals("Bearer", StringComparison.OrdinalIgnoreCase))
            return authorization[(space + 1)..].Trim();
        if ((HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)) && request.Query.TryGetValue(KeyQuery, out var query))
        {
            fromQuery = true;
            return query.ToString();
        }
        return request.Cookies.TryGetValue(KeyCookie, out string? cookie) ? cookie : null;
    }

    /// <summary>Constant-time comparison of hashes: neither the key's bytes nor its length leak through timing.</summary>
    public bool KeyMatches(string? presented) =>
        _keyHash is null || (presented is not null && CryptographicOperations.FixedTimeEquals(Hash(presented), _keyHash));

    private static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));
}
